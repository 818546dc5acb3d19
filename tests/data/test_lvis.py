"""LVIS/COCO annotation parsing, validation, indexing and the dataset."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from loce.data.lvis import LVISDataset, LVISIndex, load_lvis_json, validate_lvis
from loce.errors import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lvis_v0.5_val_100.json"


# ---- a tiny hand-made file ---------------------------------------------------------------


def _rect(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def tiny() -> dict:
    """Two images (W x H = 40 x 30 and 20 x 30), three categories with ids 5, 2, 9."""
    rle = mask_utils.encode(np.asfortranarray(_box_mask(30, 40, 10, 5, 20, 15)))
    return {
        "images": [
            {"id": 11, "width": 40, "height": 30, "file_name": "a.png"},
            {"id": 7, "width": 20, "height": 30, "file_name": "b.jpg"},
        ],
        "categories": [
            {"id": 5, "name": "five", "frequency": "f"},
            {"id": 2, "name": "two", "frequency": "r"},
            {"id": 9, "name": "nine", "frequency": "c"},
        ],
        "annotations": [
            # polygon rectangle covering pixels x in [2, 10), y in [3, 9)
            {
                "id": 1,
                "image_id": 11,
                "category_id": 9,
                "bbox": [2, 3, 8, 6],
                "segmentation": [_rect(2, 3, 10, 9)],
                "area": 48,
            },
            # compressed RLE (counts as str, as in a JSON file)
            {
                "id": 2,
                "image_id": 11,
                "category_id": 2,
                "bbox": [10, 5, 10, 10],
                "segmentation": {"size": [30, 40], "counts": rle["counts"].decode()},
                "area": 100,
            },
            # on image 7; its box sticks out of the image and gets clipped to x2 = 20
            {
                "id": 3,
                "image_id": 7,
                "category_id": 5,
                "bbox": [15, 0, 10, 4],
                "segmentation": [_rect(15, 0, 20, 4)],
                "area": 20,
            },
        ],
    }


def _box_mask(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def _write_images(root: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(a).save(root / "a.png")  # lossless, so pixel values can be compared
    b = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    Image.fromarray(b, mode="L").save(root / "b.jpg", quality=95)  # grayscale JPEG
    return a, b


def _error(data: dict, source: str = "ann.json") -> str:
    with pytest.raises(DataError) as e:
        validate_lvis(data, source)
    return str(e.value)


# ---- the real LVIS v0.5 fixture ----------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> tuple[dict, LVISIndex]:
    data = json.loads(FIXTURE.read_text())
    return data, LVISIndex.from_json(FIXTURE)


def test_real_fixture_parses_and_maps_categories(real):
    data, index = real
    validate_lvis(data, str(FIXTURE), require_federated=True)
    assert index.format == "lvis_v0.5"
    assert index.num_images == 100 and index.num_annotations == len(data["annotations"])
    assert index.num_classes == 1230
    assert index.cat_ids == sorted(c["id"] for c in data["categories"])
    assert index.frequencies is not None and set(index.frequencies) == {"r", "c", "f"}
    freq_by_id = {c["id"]: c["frequency"] for c in data["categories"]}
    assert [index.frequencies[index.label_of[c] - 1] for c in index.cat_ids] == [
        freq_by_id[c] for c in index.cat_ids
    ]
    # labels of several annotations, computed straightforwardly
    sorted_ids = sorted(c["id"] for c in data["categories"])
    for k in (0, 1, 17, 500, len(data["annotations"]) - 1):
        a = data["annotations"][k]
        assert index.ann_labels[k] == sorted_ids.index(a["category_id"]) + 1
        assert index.cat_ids[index.ann_labels[k] - 1] == a["category_id"]
        row = index.ann_image_rows[k]
        assert index.image_ids[row] == a["image_id"]
        assert k in index.annotations_of(row).tolist()
        assert index.segmentation(k) == a["segmentation"]  # exact round trip of the polygons
    assert index.file_names[0] == data["images"][0]["file_name"]


def test_real_fixture_grouping_and_label_sets(real):
    data, index = real
    by_image: dict[int, list[int]] = {}
    for k, a in enumerate(data["annotations"]):
        by_image.setdefault(a["image_id"], []).append(k)
    labels = index.image_labels()
    for row, im in enumerate(data["images"]):
        assert index.annotations_of(row).tolist() == by_image.get(im["id"], [])
        expect = sorted(
            {
                index.label_of[data["annotations"][k]["category_id"]]
                for k in by_image.get(im["id"], [])
            }
        )
        assert labels[row].tolist() == expect


def test_real_fixture_dataset_targets_without_images(real, tmp_path):
    data, index = real
    ds = LVISDataset(index, tmp_path, train=True)
    assert len(ds) == len({a["image_id"] for a in data["annotations"]})
    assert ds.num_classes == 1230 and len(ds.categories) == 1230
    assert ds.categories[0]["id"] == index.cat_ids[0]
    t = ds.get_target(0)
    anns = [a for a in data["annotations"] if a["image_id"] == t["image_id"]]
    h, w = ds.image_sizes[0]
    assert t["masks"].shape == (len(anns), h, w) and t["masks"].dtype == torch.uint8
    for m, a in zip(t["masks"], anns, strict=True):
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
        assert int(m.sum()) == int(mask_utils.area(rle))
    x, y, bw, bh = anns[0]["bbox"]
    expect = torch.tensor([x, y, min(x + bw, w), min(y + bh, h)], dtype=torch.float32)
    torch.testing.assert_close(t["boxes"][0], expect)
    with pytest.raises(DataError, match="image file not found for image id"):
        ds[0]


# ---- formats -----------------------------------------------------------------------------


def test_formats_and_file_names():
    d = tiny()
    assert LVISIndex.from_json(d).format == "lvis_v0.5"
    for c in d["categories"]:
        del c["frequency"]
    coco = LVISIndex.from_json(d)
    assert coco.format == "coco" and coco.frequencies is None
    v1 = tiny()
    for im in v1["images"]:
        name = im.pop("file_name")
        im["coco_url"] = f"http://images.cocodataset.org/val2017/{name}"
    idx = LVISIndex.from_json(v1)
    assert idx.format == "lvis_v1"
    assert idx.file_names.tolist() == ["val2017/a.png", "val2017/b.jpg"]


def test_category_table_is_sorted_by_id():
    idx = LVISIndex.from_json(tiny())
    assert idx.cat_ids == [2, 5, 9]
    assert idx.label_of == {2: 1, 5: 2, 9: 3}
    assert idx.cat_names == ["two", "five", "nine"]
    assert idx.frequencies == ["r", "f", "c"]
    assert idx.ann_labels.tolist() == [3, 1, 2]
    assert idx.image_row(7) == 1 and idx.annotations_of(0).tolist() == [0, 1]


def test_empty_file_is_valid():
    idx = LVISIndex.from_json({"images": [], "annotations": [], "categories": []})
    assert idx.num_images == 0 and idx.num_annotations == 0 and idx.image_labels() == []
    # image-info files (LVIS test) have no 'annotations' key
    d = tiny()
    del d["annotations"]
    assert LVISIndex.from_json(d).num_annotations == 0


# ---- validation errors -------------------------------------------------------------------


def test_missing_key_names_file_index_and_id():
    d = tiny()
    del d["annotations"][1]["bbox"]
    msg = _error(d, "lvis_train.json")
    assert "lvis_train.json" in msg
    assert "annotations[1] (id 2): 'bbox' is missing" in msg
    assert "Fix:" in msg


def test_wrong_types():
    d = tiny()
    d["annotations"][0]["bbox"] = [1, 2, 3]
    d["annotations"][2]["bbox"] = [1, 2, "3", 4]
    d["images"][1]["width"] = "20"
    d["annotations"][1]["category_id"] = 2.0
    msg = _error(d)
    assert "annotations[0] (id 1): 'bbox' must be 4 numbers, found [1, 2, 3]" in msg
    assert "annotations[2] (id 3): 'bbox' must be 4 numbers" in msg
    assert "images[1] (id 7): 'width' must be a positive integer, found '20'" in msg
    assert "annotations[1] (id 2): 'category_id' must be an integer, found 2.0" in msg
    assert msg.startswith("ann.json: invalid annotation file: 4 problems")


def test_non_finite_and_negative_boxes():
    d = tiny()
    d["annotations"][0]["bbox"] = [1, 2, float("nan"), 4]
    d["annotations"][2]["bbox"] = [1, 2, -3, 4]
    msg = _error(d)
    assert "annotations[0] (id 1): 'bbox' has a non-finite value" in msg
    assert "annotations[2] (id 3): 'bbox' has a negative width or height" in msg


def test_unknown_category_and_image():
    d = tiny()
    d["annotations"][1]["category_id"] = 77
    d["annotations"][2]["image_id"] = 1234
    msg = _error(d)
    assert "annotations[1] (id 2): category_id 77 is not in 'categories'" in msg
    assert "annotations[2] (id 3): image_id 1234 is not in 'images'" in msg


def test_duplicate_ids():
    d = tiny()
    d["annotations"][2]["id"] = 1
    d["images"][1]["id"] = 11
    d["categories"][2]["id"] = 5
    d["annotations"][2]["image_id"] = 11
    d["annotations"][0]["category_id"] = 2
    msg = _error(d)
    assert "annotations[0] and annotations[2] have the same id 1" in msg
    assert "images[0] and images[1] have the same id 11" in msg
    assert "categories[0] and categories[2] have the same id 5" in msg


def test_bad_segmentations_and_entries():
    d = tiny()
    d["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]  # a 4-number "polygon"
    d["annotations"][1]["segmentation"] = {"size": [10, 10], "counts": "abc"}  # wrong size
    d["annotations"][2]["segmentation"] = [[1, 2, 3, "x", 5, 6]]
    d["categories"][0]["frequency"] = "rare"
    d["images"].append("not an object")
    msg = _error(d)
    assert "annotations[0] (id 1): 'segmentation' has a polygon" in msg
    assert "annotations[1] (id 2): RLE 'size' [10, 10] differs" in msg
    assert "annotations[2] (id 3): 'segmentation' has a coordinate that is not a number" in msg
    assert "categories[0] (id 5): 'frequency' must be 'r', 'c' or 'f', found 'rare'" in msg
    assert "images[2]: expected a JSON object, found a string" in msg


def test_many_problems_are_counted_not_all_listed():
    d = tiny()
    d["annotations"] = [
        {"id": i, "image_id": 11, "category_id": 1000 + i, "bbox": [0, 0, 1, 1]} for i in range(50)
    ]
    msg = _error(d)
    assert "50 problems (first 5 shown)" in msg
    assert "annotations[4] (id 4)" in msg and "annotations[5] (id 5)" not in msg
    assert "... and 45 more" in msg
    assert len(msg.splitlines()) == 7


def test_top_level_problems(tmp_path):
    msg = _error({"images": [], "categories": {}})
    assert "'categories': expected a list, found a object" in msg
    msg = _error({"annotations": [], "categories": []})
    assert "key 'images' is missing" in msg
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON: .* line 1"):
        load_lvis_json(bad)
    listing = tmp_path / "results.json"
    listing.write_text("[]")
    with pytest.raises(DataError, match=r"results\.json: top level must be a JSON object"):
        load_lvis_json(listing)
    with pytest.raises(DataError, match=r"nope\.json: annotation file not found"):
        LVISIndex.from_json(tmp_path / "nope.json")


def test_error_from_file_names_the_file(tmp_path):
    d = tiny()
    del d["images"][0]["height"]
    path = tmp_path / "my_ann.json"
    path.write_text(json.dumps(d))
    with pytest.raises(DataError) as e:
        LVISDataset(path, tmp_path, train=True)
    assert str(path) in str(e.value)
    assert "images[0] (id 11): 'height' is missing" in str(e.value)


def test_require_federated():
    d = tiny()
    validate_lvis(d)
    with pytest.raises(DataError, match=r"images\[0\] \(id 11\): 'neg_category_ids' is missing"):
        validate_lvis(d, require_federated=True)
    for im in d["images"]:
        im["neg_category_ids"], im["not_exhaustive_category_ids"] = [2], [3]
    msg = _error(d)
    assert "'not_exhaustive_category_ids' lists category id 3, which is not in 'categories'" in msg
    # an id beyond 64 bits is reported like any unknown one, the known ones are still checked
    d["images"][0]["neg_category_ids"] = [2**70, 2]
    d["images"][1]["not_exhaustive_category_ids"] = [1]
    msg = _error(d)
    assert f"'neg_category_ids' lists category id {2**70}, which is not in 'categories'" in msg
    assert "lists category id 2," not in msg


# ---- dataset -----------------------------------------------------------------------------


def test_dataset_items(tmp_path):
    a, b = _write_images(tmp_path)
    ds = LVISDataset(tiny(), tmp_path, train=True)
    assert len(ds) == 2 and ds.image_ids == [11, 7]
    assert ds.image_sizes == [(30, 40), (30, 20)]
    assert ds.image_labels == [[1, 3], [2]]
    assert ds.num_classes == 3 and ds.frequencies == ["r", "f", "c"]

    image, t = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    assert t["image_id"] == 11
    # xywh -> xyxy: (2, 3, 8, 6) -> (2, 3, 10, 9); (10, 5, 10, 10) -> (10, 5, 20, 15)
    assert t["boxes"].tolist() == [[2, 3, 10, 9], [10, 5, 20, 15]]
    assert t["boxes"].dtype == torch.float32
    assert t["labels"].tolist() == [3, 1] and t["labels"].dtype == torch.int64
    assert t["masks"].shape == (2, 30, 40) and t["masks"].dtype == torch.uint8
    assert torch.equal(t["masks"][0], torch.from_numpy(_box_mask(30, 40, 2, 3, 10, 9)))
    assert torch.equal(t["masks"][1], torch.from_numpy(_box_mask(30, 40, 10, 5, 20, 15)))
    assert t["orig_size"].tolist() == [30, 40] and t["scale_factor"].tolist() == [1, 1, 1, 1]

    image, t = ds[1]  # grayscale JPEG -> 3 identical channels
    assert image.shape == (3, 30, 20)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert (image[0] * 255 - torch.from_numpy(b).float()).abs().mean() < 8  # lossy JPEG
    assert t["boxes"].tolist() == [[15, 0, 20, 4]]  # x + w = 25 clipped to W = 20
    assert t["masks"][0].sum() == 20


def test_uncompressed_rle_and_empty_polygon_list(tmp_path):
    _write_images(tmp_path)
    d = tiny()
    m = _box_mask(30, 40, 1, 1, 4, 6)
    counts, prev, run = [], 0, 0
    for v in m.flatten(order="F"):  # hand-made column-major run lengths, starting with zeros
        if v != prev:
            counts.append(run)
            prev, run = v, 0
        run += 1
    counts.append(run)
    d["annotations"][1]["segmentation"] = {"size": [30, 40], "counts": counts}
    d["annotations"][0]["segmentation"] = []
    ds = LVISDataset(d, tmp_path, train=True)
    t = ds.get_target(0)
    assert t["masks"][0].sum() == 0
    assert torch.equal(t["masks"][1], torch.from_numpy(m))


def test_crowd_and_degenerate_boxes(tmp_path):
    _write_images(tmp_path)
    d = tiny()
    extra = [
        {
            "id": 10,
            "image_id": 11,
            "category_id": 5,
            "bbox": [45, 5, 5, 5],
            "segmentation": [_rect(45, 5, 50, 10)],
        },  # right of the image: empty after clipping
        {
            "id": 11,
            "image_id": 11,
            "category_id": 5,
            "bbox": [5, 5, 0, 5],
            "segmentation": [_rect(5, 5, 5, 10)],
        },  # zero width
        {
            "id": 12,
            "image_id": 7,
            "category_id": 2,
            "bbox": [0, 0, 5, 5],
            "iscrowd": 1,
            "segmentation": [_rect(0, 0, 5, 5)],
        },  # crowd: never a target, not counted
    ]
    d["annotations"] += extra
    # image 7 keeps only a degenerate box and a crowd region -> filtered out in training
    d["annotations"][2]["bbox"] = [20, 0, 10, 4]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = LVISDataset(d, tmp_path, train=True)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1, msgs  # one warning for all boxes, not one per box
    assert "dropped 3 of 6 annotation boxes" in msgs[0]
    assert "annotations[2] (id 3)" in msgs[0]
    assert ds.num_dropped_boxes == 3
    assert ds.image_ids == [11]
    assert ds.get_target(0)["labels"].tolist() == [3, 1]
    with pytest.warns(UserWarning, match="dropped 3"):
        test_ds = LVISDataset(d, tmp_path, train=False)
    assert test_ds.image_ids == [11, 7]
    t = test_ds.get_target(1)
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    assert t["masks"].shape == (0, 30, 20)
    with pytest.warns(UserWarning, match="smaller than 6"):
        big_only = LVISDataset(d, tmp_path, train=True, min_box_size=6)
    assert big_only.get_target(0)["labels"].tolist() == [3, 1]  # 8x6 and 10x10 are >= 6
    with pytest.warns(UserWarning, match="dropped 4 of 6"):
        bigger = LVISDataset(d, tmp_path, train=True, min_box_size=7)
    assert bigger.get_target(0)["labels"].tolist() == [1]  # 8x6 is now too short


def test_no_usable_image_is_an_error(tmp_path):
    d = tiny()
    for a in d["annotations"]:
        a["iscrowd"] = 1
    with pytest.raises(DataError, match="no image has a usable annotation"):
        LVISDataset(d, tmp_path, train=True)
    assert len(LVISDataset(d, tmp_path, train=False)) == 2


def test_missing_segmentation(tmp_path):
    d = tiny()
    del d["annotations"][2]["segmentation"]
    with pytest.raises(DataError, match=r"annotations\[2\] \(id 3\)\).*with_masks=False"):
        LVISDataset(d, tmp_path, train=True)
    ds = LVISDataset(d, tmp_path, train=True, with_masks=False)
    assert "masks" not in ds.get_target(1)


def test_missing_and_unreadable_images(tmp_path, monkeypatch):
    _write_images(tmp_path)
    (tmp_path / "b.jpg").unlink()
    ds = LVISDataset(tiny(), tmp_path, train=True)
    ds[0]
    with pytest.raises(DataError) as e:
        ds[1]
    assert "image id 7" in str(e.value) and str(tmp_path / "b.jpg") in str(e.value)
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as e:
        ds[1]
    assert "cannot read image file" in str(e.value) and "image id 7" in str(e.value)
    assert str(tmp_path / "b.jpg") in str(e.value)
    Image.new("RGB", (21, 30)).save(tmp_path / "b.jpg")
    with pytest.raises(DataError, match=r"is 30x21 \(HxW\) but .* says 30x20"):
        ds[1]
    with pytest.raises(IndexError):
        ds[2]
    # Pillow's decompression-bomb guard: above the limit (a warning) and twice above (an error)
    Image.new("RGB", (20, 30)).save(tmp_path / "b.jpg")
    for limit in (400, 200):
        with monkeypatch.context() as m:
            m.setattr(Image, "MAX_IMAGE_PIXELS", limit)
            with pytest.raises(DataError, match=r"b\.jpg \(image id 7\) is 20x30 \(0\.0 megapixels\), "
                               r"over the 0\.0-megapixel limit .*downscale it first"):
                ds[1]
    assert ds[1][0].shape == (3, 30, 20)  # negative control: the default limit
    with pytest.raises(DataError, match=r"image root .*nowhere is not a folder"):
        LVISDataset(tiny(), tmp_path / "nowhere", train=True)


def test_lvis_v1_and_v05_image_lookup(tmp_path):
    v1 = tiny()
    for im in v1["images"]:
        im["coco_url"] = "http://images.cocodataset.org/val2017/" + im.pop("file_name")
    (tmp_path / "val2017").mkdir()
    _write_images(tmp_path / "val2017")
    ds = LVISDataset(v1, tmp_path, train=True)  # root holds val2017/
    assert ds.image_path(0) == tmp_path / "val2017" / "a.png"
    ds = LVISDataset(v1, tmp_path / "val2017", train=True)  # root is the split folder
    assert ds.image_path(0) == tmp_path / "val2017" / "a.png"
    assert ds[0][0].shape == (3, 30, 40)

    v05 = tiny()
    v05["images"][0]["file_name"] = "COCO_val2014_000000000011.png"
    Image.new("RGB", (40, 30)).save(tmp_path / "000000000011.png")
    ds = LVISDataset(v05, tmp_path, train=True)
    assert ds.image_path(0) == tmp_path / "000000000011.png"


def test_transforms_and_dataloader(tmp_path):
    from loce.data.samplers import (
        GroupedBatchSampler,
        RandomSampler,
        aspect_ratio_group_ids,
        collate_fn,
    )
    from loce.data.transforms import Resize

    _write_images(tmp_path)
    ds = LVISDataset(tiny(), tmp_path, train=True, transforms=Resize(60, 100))
    image, t = ds[0]
    assert image.shape == (3, 60, 80)
    assert t["boxes"].tolist() == [[4, 6, 20, 18], [20, 10, 40, 30]]
    assert t["masks"].shape == (2, 60, 80) and t["masks"][0].sum() == 4 * 48
    groups = aspect_ratio_group_ids(ds.image_sizes)
    assert groups == [1, 0]
    batches = GroupedBatchSampler(RandomSampler(ds, seed=1), groups, batch_size=1)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate_fn)
    seen = []
    for images, targets in loader:
        assert isinstance(images, list) and len(images) == len(targets) == 1
        seen.append(targets[0]["image_id"])
    assert sorted(seen) == [7, 11]
    # two groups of one image, batches of 2: one batch (ceil(2 / 2)), one image repeated
    batches = GroupedBatchSampler(RandomSampler(ds, seed=1), groups, batch_size=2)
    ((images, targets),) = list(
        torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate_fn)
    )
    assert targets[0]["image_id"] == targets[1]["image_id"]


def test_dict_input_is_not_modified():
    d = tiny()
    before = copy.deepcopy(d)
    LVISIndex.from_json(d)
    assert d == before


def test_bad_iscrowd():
    d = tiny()
    d["annotations"][2]["iscrowd"] = 2
    assert "annotations[2] (id 3): 'iscrowd' must be 0 or 1, found 2" in _error(d)
    d["annotations"][2]["iscrowd"] = "1"
    assert "annotations[2] (id 3): 'iscrowd' must be 0 or 1, found '1'" in _error(d)
    d["annotations"][2]["iscrowd"] = 2**64
    assert f"annotations[2] (id 3): 'iscrowd' must be 0 or 1, found {2**64}" in _error(d)
    d["annotations"][2]["iscrowd"] = True
    assert LVISIndex.from_json(d).ann_iscrowd.tolist() == [False, False, True]


def test_parsing_does_not_import_torch():
    # evaluation reuses the parser and validator; they must stay cheap to import
    code = (
        "import sys; from loce.data.lvis import LVISIndex; "
        f"LVISIndex.from_json({str(FIXTURE)!r}); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_opencv_decoder_and_the_test_pipeline(tmp_path):
    """``decoder="opencv"`` (the original's) reads the same PNG pixels; with MMCVResize the
    items are uint8 and the targets follow."""
    from loce.data.transforms import MMCVResize

    a, _ = _write_images(tmp_path)
    ds = LVISDataset(tiny(), tmp_path, train=False, decoder="opencv")
    assert ds.decoder == "opencv"
    assert torch.equal(ds[0][0], LVISDataset(tiny(), tmp_path, train=False)[0][0])
    assert torch.equal(ds.load_image(0), torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    resized = LVISDataset(tiny(), tmp_path, train=False, decoder="opencv",
                          transforms=MMCVResize(60, 100))
    image, t = resized[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 60, 80)
    assert t["boxes"].tolist() == [[4, 6, 20, 18], [20, 10, 40, 30]]
    assert t["scale_factor"].tolist() == [2, 2, 2, 2] and t["masks"].shape == (2, 60, 80)
    with pytest.raises(ValueError, match="decoder must be one of"):
        LVISDataset(tiny(), tmp_path, train=False, decoder="cv2")
