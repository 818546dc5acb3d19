"""`loce predict`: results files that `loce eval` accepts, pictures, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest

from loce.cli import main as cli_main


def test_predict_on_annotated_set_then_eval(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "results.json"
    vis = tmp_path / "vis"
    code = cli_main(["predict", "--checkpoint", str(tiny_checkpoint),
                     "--gt", str(tiny_dataset / "annotations/val.json"),
                     "--image-root", str(tiny_dataset), "--out", str(out),
                     "--visualize", str(vis), "--vis-threshold", "0.0",
                     "--set", "model.test.score_thresh=0.0"])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    val = json.loads((tiny_dataset / "annotations/val.json").read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in val["images"]}
    cats = {c["id"] for c in val["categories"]}
    assert results, "an untrained model with score threshold 0 still outputs detections"
    for r in results[:50]:
        assert r["image_id"] in sizes and r["category_id"] in cats
        x, y, w, h = r["bbox"]
        assert w >= 0 and h >= 0 and x >= 0 and y >= 0
        assert x + w <= sizes[r["image_id"]][1] + 1e-3 and y + h <= sizes[r["image_id"]][0] + 1e-3
        assert r["segmentation"]["size"] == list(sizes[r["image_id"]])
        assert isinstance(r["segmentation"]["counts"], str)
    # one picture per image, under the input's file name
    names = {im["coco_url"].rsplit("/", 1)[-1] for im in val["images"]}
    assert {p.name for p in vis.iterdir()} == names
    metrics_path = tmp_path / "metrics.json"
    assert cli_main(["eval", "--gt", str(tiny_dataset / "annotations/val.json"),
                     "--results", str(out), "--out", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) == {"bbox", "segm"}


def test_predict_on_image_folder(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted((tiny_dataset / "val").glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "folder.json"
    assert cli_main(["predict", "--checkpoint", str(tiny_checkpoint), "--images", str(folder),
                     "--out", str(out), "--no-masks"]) == 0
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} <= {1, 2}
    assert all("segmentation" not in r for r in results)
    assert "wrote" in capsys.readouterr().out


def test_predict_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    code = cli_main(["predict", "--checkpoint", str(tmp_path / "none.pth"), "--images",
                     str(tmp_path), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "none.pth does not exist" in err and "Traceback" not in err
    code = cli_main(["predict", "--checkpoint", str(tiny_checkpoint), "--images",
                     str(tmp_path), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "no image files" in err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    code = cli_main(["predict", "--checkpoint", str(bad), "--images", str(tmp_path),
                     "--out", str(tmp_path / "r.json")])
    assert code == 2 and "cannot read the checkpoint" in capsys.readouterr().err


def test_box_only_prediction_skips_the_mask_branch(tiny_dataset, tiny_checkpoint, tmp_path):
    """Without masks the mask branch does not run; boxes and scores are the same as with it,
    and the model's setting is restored afterwards."""
    import torch

    from loce import build
    from loce.engine.checkpoint import load_trained_model
    from loce.engine.evaluate import predict_to_file

    model, cfg, _ = load_trained_model(
        tiny_checkpoint, ["model.test.score_thresh=0.0", f"data.val_images={tiny_dataset}"])
    dataset = build.build_val_dataset(cfg)
    calls = []
    model.roi_heads.mask_head.register_forward_hook(lambda *a: calls.append(1))
    kw = {"device": torch.device("cpu"), "indices": range(3), "workers": 0, "progress": False}
    predict_to_file(model, dataset, tmp_path / "masks.json", with_masks=True, **kw)
    assert calls
    calls.clear()
    predict_to_file(model, dataset, tmp_path / "boxes.json", with_masks=False, **kw)
    assert not calls and model.roi_heads.infer_masks is True
    with_masks = json.loads((tmp_path / "masks.json").read_text())
    boxes = json.loads((tmp_path / "boxes.json").read_text())
    assert boxes and all("segmentation" not in r for r in boxes)
    assert [(r["image_id"], r["category_id"], r["bbox"], r["score"]) for r in with_masks] == \
        [(r["image_id"], r["category_id"], r["bbox"], r["score"]) for r in boxes]


def test_predict_top_k_per_class_over_the_dataset(tiny_dataset, tiny_checkpoint, tmp_path,
                                                  capsys):
    full, capped = tmp_path / "full.json", tmp_path / "capped.json"
    common = ["predict", "--checkpoint", str(tiny_checkpoint), "--gt",
              str(tiny_dataset / "annotations/val.json"), "--image-root", str(tiny_dataset),
              "--no-masks", "--set", "model.test.score_thresh=0.0"]
    assert cli_main([*common, "--out", str(full)]) == 0
    assert cli_main([*common, "--out", str(capped), "--dets-per-class", "3"]) == 0
    assert "kept the top 3 detections per class" in capsys.readouterr().out
    everything = json.loads(full.read_text())
    kept = json.loads(capped.read_text())
    by_class: dict[int, list[float]] = {}
    for r in everything:
        by_class.setdefault(r["category_id"], []).append(r["score"])
    expected = sorted(s for scores in by_class.values() for s in sorted(scores)[::-1][:3])
    assert sorted(r["score"] for r in kept) == expected
    assert max(sum(r["category_id"] == c for r in kept) for c in by_class) == 3
    assert len(everything) > len(kept)
    assert cli_main([*common, "--out", str(capped), "--dets-per-class", "0"]) == 2


# ---------------------------------------------------------------------------- pictures


def _det(boxes, labels, scores, masks=None):
    import torch

    det = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
           "scores": torch.tensor(scores, dtype=torch.float32)}
    if masks is not None:
        det["masks"] = torch.from_numpy(masks)[:, None]
    return det


def test_label_positions_stay_inside_the_image():
    from loce.engine.predict import _label_position

    # above the box when there is room, inside its top edge when not
    assert _label_position((20, 30, 60, 80), (50, 12), (200, 100)) == (20, 18)
    assert _label_position((20, 5, 60, 80), (50, 12), (200, 100)) == (20, 5)
    # a box at the right edge: the label moves left so that all of it is in the image
    assert _label_position((190, 30, 199, 80), (50, 12), (200, 100)) == (150, 18)
    # at the bottom right corner, a box of one pixel
    assert _label_position((199, 99, 200, 100), (50, 12), (200, 100)) == (150, 87)


def test_pictures_tint_masks_threshold_and_keep_colours():
    import numpy as np

    from loce.engine.predict import class_color, draw_detections

    image = np.full((60, 120, 3), 100, dtype=np.uint8)
    masks = np.zeros((2, 60, 120), dtype=bool)
    masks[0, 30:50, 10:40] = True
    masks[1, 30:50, 70:100] = True
    det = _det([[8, 28, 42, 52], [68, 28, 102, 52]], [3, 5], [0.9, 0.2], masks)
    picture = np.asarray(draw_detections(image, det, [f"c{i}" for i in range(1, 6)], 0.5,
                                         mask_alpha=0.5))
    colour = np.array(class_color(3), dtype=float)
    # inside the first mask: half image, half class colour (torchvision's blend)
    np.testing.assert_allclose(picture[40, 25], 0.5 * 100 + 0.5 * colour, atol=1)
    # the second detection scores below the threshold: not drawn at all
    assert (picture[30:50, 70:100] == 100).all()
    # the label of the first sits above its box, on the class colour
    assert (np.abs(picture[17:27, 8:20].astype(float) - colour).sum(-1) < 3).any()
    # one colour per class, the same every time, different between classes
    assert class_color(3) == class_color(3) and class_color(3) != class_color(4)
    nothing = draw_detections(image, _det(np.zeros((0, 4)), [], []), ["a"], 0.5)
    assert (np.asarray(nothing) == image).all()


def test_long_names_at_the_right_edge_are_not_cut():
    import numpy as np

    from loce.engine.predict import draw_detections

    image = np.zeros((80, 160, 3), dtype=np.uint8)
    det = _det([[150, 40, 159, 70]], [1], [0.87])
    picture = np.asarray(draw_detections(image, det, ["orange_solid_hexagon"], 0.3))
    label_rows = picture[20:40]
    columns = np.nonzero(label_rows.any(axis=(0, 2)))[0]
    # the filled label box ends inside the image and is wider than the box it names
    assert columns.max() <= 159 and columns.min() < 150 - 60


def test_mask_crops_copy_only_the_covered_pixels():
    import numpy as np
    import torch

    from loce.engine.evaluate import mask_crops

    masks = torch.zeros(3, 1, 6, 8, dtype=torch.bool)
    masks[0, 0, 1:3, 2:5] = True
    masks[0, 0, 4, 7] = True  # a second blob widens the crop to rows 1..4, columns 2..7
    probs = torch.zeros(3, 1, 6, 8)
    probs[1, 0, 5, 0] = 0.5  # exactly at the threshold: foreground
    crops = mask_crops(masks)
    assert [(top, left, c.shape) for top, left, c in crops] == [(1, 2, (4, 6)), (6, 8, (0, 0)),
                                                      (6, 8, (0, 0))]
    assert np.array_equal(crops[0][2], masks[0, 0, 1:5, 2:8].numpy())
    crops = mask_crops(probs)
    assert crops[1][:2] == (5, 0) and crops[1][2].tolist() == [[True]]
    assert mask_crops(masks[:0]) == []


def test_prediction_in_batches_writes_the_same_results(tiny_dataset, tiny_checkpoint, tmp_path):
    """eval.images_per_gpu images go through the model together; the results are those of
    one image at a time up to the padding of the batch (which moves FPN borders slightly)."""
    import torch

    from loce import build
    from loce.engine.checkpoint import load_trained_model
    from loce.engine.evaluate import predict_to_file

    model, cfg, _ = load_trained_model(
        tiny_checkpoint, ["model.test.score_thresh=0.0", f"data.val_images={tiny_dataset}"])
    dataset = build.build_val_dataset(cfg)
    batches = []
    model.backbone.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    kw = {"device": torch.device("cpu"), "indices": range(5), "workers": 0, "progress": False}
    predict_to_file(model, dataset, tmp_path / "one.json", batch_size=1, **kw)
    assert batches == [1] * 5
    batches.clear()
    predict_to_file(model, dataset, tmp_path / "three.json", batch_size=3, **kw)
    assert batches == [3, 2]
    one = json.loads((tmp_path / "one.json").read_text())
    three = json.loads((tmp_path / "three.json").read_text())
    assert one and all("segmentation" in r for r in one)
    assert [(r["image_id"], r["category_id"]) for r in one] == \
        [(r["image_id"], r["category_id"]) for r in three]
    same = sum(a["segmentation"] == b["segmentation"] for a, b in zip(one, three))
    assert same >= 0.9 * len(one)
    for a, b in zip(one, three):
        assert a["bbox"] == pytest.approx(b["bbox"], abs=0.5)
