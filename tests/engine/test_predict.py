"""`loce predict`: results files that `loce eval` accepts, pictures, clear errors."""

from __future__ import annotations

import json
import shutil

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
    assert len(list(vis.glob("*.png"))) == len(val["images"])
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
    assert code == 2 and "cannot read checkpoint" in capsys.readouterr().err


def test_box_only_prediction_skips_the_mask_branch(tiny_dataset, tiny_checkpoint, tmp_path):
    """Without masks the mask branch does not run; boxes and scores are the same as with it,
    and the model's setting is restored afterwards."""
    import torch

    from loce import build
    from loce.engine.evaluate import predict_to_file

    model, cfg, _ = build.load_trained_model(
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
