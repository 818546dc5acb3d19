"""RLE checks: every mask pycocotools encodes passes; garbage counts are refused at load time
(they used to decode silently into some mask and train to a checkpoint)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from loce.data.lvis import LVISIndex, validate_lvis
from loce.data.rle import encode_crop, rle_problem
from loce.errors import DataError


def test_every_encoded_mask_passes_and_its_size_is_checked():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")
        assert rle_problem(counts, h, w) is None
        # the same counts for another size cover the wrong number of pixels
        assert "covers" in rle_problem(counts, h + 1, w)


@pytest.mark.parametrize(("counts", "expected"), [
    ("garbage!", "character 'r' at position 2"),
    ("0", "covers 0 pixels"),
    ("abc", "ends in the middle of a run length"),
    ([3, 4], "covers 7 pixels"),
    ([8, -2], "negative run length"),
])
def test_garbage_counts(counts, expected):
    assert expected in rle_problem(counts, 2, 3)


def _with_rle(counts):
    gt = {"images": [{"id": 1, "height": 2, "width": 3, "file_name": "a.jpg"}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2],
                           "segmentation": {"size": [2, 3], "counts": counts}}]}
    return gt


def test_training_annotations_with_garbage_counts_are_refused():
    good = mask_utils.encode(np.asfortranarray(np.eye(2, 3, dtype=np.uint8)))["counts"].decode()
    validate_lvis(_with_rle(good))  # negative control
    LVISIndex.from_json(_with_rle([1, 2, 3]))
    for counts in ("garbage!", [1, 2]):
        with pytest.raises(DataError, match=r"annotations\[0\] \(id 7\): 'counts' .*Fix: "
                           r"re-encode the mask"):
            LVISIndex.from_json(copy.deepcopy(_with_rle(counts)))


def test_encode_crop_equals_pycocotools_on_the_whole_mask():
    rng = np.random.default_rng(3)
    cases = 0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1, x1 = int(rng.integers(y0, h + 1)), int(rng.integers(x0, w + 1))
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.random()
        if rng.random() < 0.1:  # a mask that reaches the last pixel (no trailing zeros)
            mask[-1, -1], y1, x1 = True, h, w
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        got = encode_crop(mask[y0:y1, x0:x1], y0, x0, h, w)
        assert got == {"size": [h, w], "counts": expected["counts"].decode("ascii")}
        cases += int(mask[-1, -1])
    assert cases > 10
    empty = encode_crop(np.zeros((0, 0), dtype=bool), 0, 0, 3, 4)
    assert mask_utils.decode({"size": [3, 4], "counts": empty["counts"]}).sum() == 0
