"""Image decoding with Pillow and OpenCV (the original's decoder), and the datasets' choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loce.data.image_io import read_rgb
from loce.engine.predict import ImageFolder
from loce.errors import DataError

REFERENCE_JPEG = Path(__file__).parents[1] / "fixtures" / "mmdet_reference" / "image.jpg"


def _write(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 3, 4), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(grey, mode="L").save(root / "grey.png")
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    return {"rgb": rgb, "grey": np.repeat(grey[:, :, None], 3, axis=2), "rgba": rgba[:, :, :3]}


@pytest.mark.parametrize("decoder", ["pillow", "opencv"])
def test_decoders_give_rgb_uint8(tmp_path, decoder):
    expected = _write(tmp_path)
    for name, pixels in expected.items():
        got = read_rgb(tmp_path / f"{name}.png", decoder)
        assert got.dtype == np.uint8 and got.shape == pixels.shape and got.flags.writeable
        assert np.array_equal(got, pixels), name  # RGB order (OpenCV decodes BGR)


def test_decoders_agree_on_the_reference_jpeg():
    pil, cv = read_rgb(REFERENCE_JPEG, "pillow"), read_rgb(REFERENCE_JPEG, "opencv")
    assert pil.shape == (300, 451, 3) and np.array_equal(pil, cv)


@pytest.mark.parametrize("decoder", ["pillow", "opencv"])
def test_unreadable_files(tmp_path, decoder):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("bad.jpg", "empty.png", "missing.png"):
        with pytest.raises(DataError, match=rf"cannot read image file .*{name}"):
            read_rgb(tmp_path / name, decoder)


def test_unknown_decoder(tmp_path):
    _write(tmp_path)
    with pytest.raises(ValueError, match="'pillow', 'opencv'"):
        read_rgb(tmp_path / "rgb.png", "turbojpeg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'pillow', 'opencv'"):
        ImageFolder(tmp_path, None, [1], decoder="cv")  # type: ignore[arg-type]


def test_image_folder_decoder(tmp_path):
    _write(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"x")
    folder = ImageFolder(tmp_path, None, [1], decoder="opencv")
    assert [p.name for p in folder.files] == ["bad.png", "grey.png", "rgb.png", "rgba.png"]
    image, target = folder[2]
    expected = torch.from_numpy(read_rgb(tmp_path / "rgb.png")).permute(2, 0, 1).float() / 255
    assert torch.equal(image, expected) and target["orig_size"].tolist() == [7, 9]
    from loce.errors import DataError

    with pytest.raises(DataError, match=r"image id 1: .*bad.png"):
        folder[0]


def test_a_read_only_array_comes_back_writable():
    """np.asarray(PIL image) is read-only; torch.from_numpy of it warns."""
    import warnings

    import numpy as np
    import torch

    from loce.data.image_io import to_rgb_array

    frozen = np.zeros((4, 5, 3), dtype=np.uint8)
    frozen.flags.writeable = False
    rgb, note = to_rgb_array(frozen)
    assert rgb.flags.writeable and note is None
    assert not frozen.flags.writeable  # the caller's array is left as it was
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(rgb)
