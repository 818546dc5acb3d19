"""ClassStatistics as a checkpoint stores it: plain values, read back equal, checked."""

from __future__ import annotations

import io

import pytest
import torch

from loce.data.statistics import ClassStatistics

STATS = ClassStatistics(image_counts=(5, 3, 10), instance_counts=(7, 3, 25), num_images=12,
                        source="train.json", fractal_dims=(1.0, 1.5849625007211563, 1.25),
                        frequencies=("c", "r", "f"))


@pytest.mark.parametrize("stats", [STATS, ClassStatistics((1, 2), (1, 4), 2)])
def test_round_trip_through_a_weights_only_load(stats):
    data = stats.to_dict()
    assert data == {
        "image_counts": list(stats.image_counts),
        "instance_counts": list(stats.instance_counts),
        "num_images": stats.num_images,
        "fractal_dims": None if stats.fractal_dims is None else list(stats.fractal_dims),
        "frequencies": None if stats.frequencies is None else list(stats.frequencies),
        "source": stats.source,
    }
    buffer = io.BytesIO()
    torch.save({"class_statistics": data}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["class_statistics"]
    assert ClassStatistics.from_dict(loaded, "ckpt: class_statistics") == stats


def test_numpy_and_integer_values_become_plain():
    import numpy as np

    stats = ClassStatistics(tuple(np.array([4, 2])), tuple(np.array([4, 2])), np.int64(5),
                            fractal_dims=(np.float64(1.5), 1))
    data = stats.to_dict()
    assert [type(v) for v in data["image_counts"]] == [int, int]
    assert type(data["num_images"]) is int
    assert [type(v) for v in data["fractal_dims"]] == [float, float]
    assert ClassStatistics.from_dict(data, "x").fractal_dims == (1.5, 1.0)


def test_an_entry_of_an_earlier_version_has_no_groups():
    data = STATS.to_dict()
    del data["frequencies"]
    stats = ClassStatistics.from_dict(data, "x")
    assert stats.frequencies is None and stats.image_counts == (5, 3, 10)


@pytest.mark.parametrize(("change", "message"), [
    ({"image_counts": "5,3,10"}, r"ckpt: class_statistics: 'image_counts' must be a list of ints"),
    ({"instance_counts": [7, 3.0, 25]}, r"'instance_counts' must be a list of ints"),
    ({"image_counts": [True, 3, 10]}, r"'image_counts' must be a list of ints"),
    ({"num_images": None}, r"'num_images' must be an int, found None"),
    ({"fractal_dims": [1.0, "x", 1.0]}, r"'fractal_dims' must be a list of floats"),
    ({"fractal_dims": [1.0, float("nan"), 1.0]}, r"'fractal_dims' must be finite"),
    ({"fractal_dims": [1.0, 1.5]}, r"ckpt: class_statistics: 2 fractal dimensions for 3"),
    ({"image_counts": [5, 3, 13]},
     r"ckpt: class_statistics: image_counts\[2\] = 13 exceeds num_images = 12"),
    ({"frequencies": ["c", "r"]}, r"ckpt: class_statistics: 2 frequency groups for 3 classes"),
    ({"frequencies": ["c", "r", "frequent"]},
     r"ckpt: class_statistics: frequencies\[2\] is 'frequent' \(class label 3\); expected "
     r"one of 'r', 'c', 'f'"),
    ({"frequencies": "crf"}, r"'frequencies' must be a list of 'r', 'c' or 'f', found crf"),
    ({"frequencies": ["c", None, "f"]}, r"'frequencies' must be a list of 'r', 'c' or 'f'"),
])
def test_a_malformed_entry_names_the_key(change, message):
    data = {**STATS.to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        ClassStatistics.from_dict(data, "ckpt: class_statistics")
    with pytest.raises(ValueError, match=r"ckpt: class_statistics is a list, expected a dict"):
        ClassStatistics.from_dict([1, 2], "ckpt: class_statistics")
