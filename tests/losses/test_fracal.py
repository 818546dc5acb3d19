"""FRACAL: fractal dimensions of box centres, the calibrated scores, and the model option.

Reference values were computed with FRACAL's own statistics and scoring code (the box-count
variant with 64 grids and its least-squares fit; the ``base10`` frequency term and
``fractal_l = 2`` of its LVIS config) on the seeded case of :func:`seeded_centres`, and are
transcribed here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loce.config.model import ModelConfig
from loce.data.statistics import ClassStatistics, fractal_dimensions
from loce.errors import ConfigError
from loce.losses.scoring import fracal_logit_offsets, fracal_scores
from loce.models import build_mask_rcnn

K = 4


def seeded_centres() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3, 6, 40 and 200 centres: class 3 clustered in a 0.1 x 0.2 patch, the others uniform."""
    rng = np.random.default_rng(7)
    cx, cy, labels = [], [], []
    for k, n in enumerate([3, 6, 40, 200]):
        if k == 2:
            x, y = 0.3 + 0.1 * rng.random(n), 0.6 + 0.2 * rng.random(n)
        else:
            x, y = rng.random(n), rng.random(n)
        cx += list(np.round(x, 4))
        cy += list(np.round(y, 4))
        labels += [k + 1] * n
    return np.asarray(cx), np.asarray(cy), np.asarray(labels)


def test_fractal_dimensions_match_the_original_on_a_seeded_case():
    dims = fractal_dimensions(*seeded_centres(), K)
    # Fewer than 4 instances: 1. The clustered class's slope is below 1: clamped to 1.
    expected = [1.0, 1.9999999999999998, 1.0, 1.8632437705739722]
    np.testing.assert_allclose(dims, expected, rtol=0, atol=1e-9)


def test_fractal_dimensions_by_hand():
    # Class 1: four centres, one per quadrant: N(1) = 1, N(2) = 4, slope ln 4 / ln 2 = 2.
    # Class 2: four centres in three quadrants: slope ln 3 / ln 2 (FRACAL's LVIS file has
    # 1.5849624991137754 for such classes). Class 3: centres at 1.0 fall in no cell.
    cx = [0.1, 0.6, 0.1, 0.6, 0.1, 0.2, 0.6, 0.1, 1.0, 1.0, 1.0, 1.0]
    cy = [0.1, 0.1, 0.6, 0.6, 0.1, 0.2, 0.1, 0.6, 0.5, 0.5, 0.5, 0.5]
    labels = [1] * 4 + [2] * 4 + [3] * 4
    dims = fractal_dimensions(np.asarray(cx), np.asarray(cy), np.asarray(labels), 4)
    assert dims[0] == pytest.approx(2.0, abs=1e-12)
    assert dims[1] == pytest.approx(math.log(3) / math.log(2), abs=1e-12)
    assert dims[2] == 1.0 and dims[3] == 1.0  # nothing counted; no instance


def test_fracal_scores_match_the_original():
    image_counts, num_images = torch.tensor([5, 3, 10, 40]), 50
    offsets = fracal_logit_offsets(image_counts, num_images)
    expected_offsets = [0.3979400086720376, 0.619788758288394, 0.09691001300805635,
                        -0.505149978319906]  # fmt: skip
    torch.testing.assert_close(offsets, torch.tensor(expected_offsets, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    # -log10(f_c) - log10(K) by hand for class 1: -log10(0.1) - log10(4) = 1 - 0.60206.
    assert offsets[0].item() == pytest.approx(1 - math.log10(4), abs=1e-12)
    dims = torch.tensor([1.0, 1.9999999999999998, 1.0, 1.8632437705739722])
    z = torch.tensor([[0.5, 1.0, -0.2, 2.0, 0.3], [2.0, -1.0, 0.0, 0.5, 1.5]])
    got = fracal_scores(z, offsets, dims, 2.0)
    expected = torch.tensor([
        [0.11408586965823392, 0.28002850908246024, 0.026323071675247944, 0.5633276443853554,
         0.01623490519870244],
        [0.6719256796384728, 0.04980362374279832, 0.04225159631949637, 0.1651836279305308,
         0.07083547236870162],
    ])  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    # lambda 0 with zero offsets is the plain softmax.
    torch.testing.assert_close(fracal_scores(z, torch.zeros(K), dims, 0.0), torch.softmax(z, 1))
    with pytest.raises(ValueError, match=r"fractal_dims \[K\]"):
        fracal_scores(z, offsets, torch.ones(3), 2.0)


def small_config() -> ModelConfig:
    cfg = ModelConfig(backbone="resnet18", backbone_weights="none", fpn_channels=32,
                      frozen_stages=4)  # fmt: skip
    cfg.roi.representation_size = 32
    return cfg


STATS = ClassStatistics(image_counts=(5, 3, 10, 40), instance_counts=(5, 3, 12, 80),
                        num_images=50, source="stats.json",
                        fractal_dims=(1.0, 2.0, 1.0, 1.5))  # fmt: skip


def test_fracal_in_the_builder_and_the_heads():
    cfg = small_config()
    cfg.test.fracal_lambda = 2.0
    model = build_mask_rcnn(cfg, K, load_backbone=False, class_stats=STATS).eval()
    heads = model.roi_heads
    assert heads.fracal_lambda == 2.0
    torch.testing.assert_close(heads.fracal_dims, torch.tensor([1.0, 2.0, 1.0, 1.5]))
    z = torch.randn(3, K + 1)
    expected = fracal_scores(z, fracal_logit_offsets(torch.tensor([5, 3, 10, 40]), 50),
                             torch.tensor([1.0, 2.0, 1.0, 1.5]), 2.0)  # fmt: skip
    torch.testing.assert_close(heads.class_scores(z), expected)
    # Not part of the trained model: the same state dict as without FRACAL.
    plain = build_mask_rcnn(small_config(), K, load_backbone=False)
    assert model.state_dict().keys() == plain.state_dict().keys()
    heads.set_fracal(None, None, None)
    torch.testing.assert_close(heads.class_scores(z), torch.softmax(z, 1))
    with pytest.raises(ConfigError, match=r"fracal_lambda needs the image count and the fractal"):
        build_mask_rcnn(cfg, K, load_backbone=False,
                        class_stats=ClassStatistics((5, 3, 10, 40), (5, 3, 12, 80), 50))  # fmt: skip


def test_fracal_config_checks():
    cfg = small_config()
    cfg.test.fracal_lambda = -1.0
    with pytest.raises(ConfigError, match=r"model\.test\.fracal_lambda must be a finite number"):
        cfg.validate()
    cfg.test.fracal_lambda, cfg.test.norcal_gamma = 2.0, 0.5
    with pytest.raises(ConfigError, match=r"set one of them to null"):
        cfg.validate()
    cfg.test.norcal_gamma = None
    cfg.roi.cls_loss = "eqlv2"
    with pytest.raises(ConfigError, match=r"fracal_lambda.*calibrates softmax"):
        cfg.validate()
