"""Decoding image files to RGB arrays, with Pillow or with OpenCV (as mmcv does).

The decoder is a setting of the test pipeline (``data.test_resize``, see
:func:`loce.build.build_test_decoder`): "opencv" reproduces the original's
``mmcv.imfrombytes`` (``cv2.imdecode`` with ``IMREAD_COLOR`` on the file's bytes, BGR turned
into RGB), "pillow" is Pillow's ``Image.open(...).convert("RGB")``. Both give 3-channel
uint8 images: grey images are replicated, an alpha channel is dropped.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Literal

import numpy as np

from loce.errors import DataError

__all__ = ["DECODERS", "Decoder", "check_decoder", "check_pixel_limit", "read_rgb"]

Decoder = Literal["pillow", "opencv"]
DECODERS: tuple[str, ...] = ("pillow", "opencv")
_HEADER_LOCK = threading.Lock()


def check_decoder(decoder: str) -> Decoder:
    """``decoder`` if it names a decoder, else ValueError listing the choices."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(map(repr, DECODERS))}, got {decoder!r}")
    return decoder  # type: ignore[return-value]


def _header_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """An image file's ``(width, height)`` from its header, with Pillow's bomb check off for
    this one look (nothing is decoded)."""
    from PIL import Image

    with _HEADER_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                return im.size
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def check_pixel_limit(path: str | os.PathLike[str], what: str | None = None) -> None:
    """Refuse an image file above Pillow's decompression-bomb limit before decoding it.

    The limit is ``PIL.Image.MAX_IMAGE_PIXELS`` (89.5 Mpixels by default; a 14000 x 14000
    image has 196): a small file that decodes to gigabytes is refused whichever decoder is
    used. Only the header is read; a file Pillow cannot identify is left to the decoder.

    Raises:
        DataError: naming the file, its size and the limit.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path):
                return
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        pass
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return
    w, h = _header_size(path)
    limit = Image.MAX_IMAGE_PIXELS or 0
    where = f" ({what})" if what else ""
    raise DataError(
        f"image file {path}{where} is {w}x{h} ({w * h / 1e6:.1f} megapixels), over the "
        f"{limit / 1e6:.1f}-megapixel limit that guards against decompression bombs "
        "(PIL.Image.MAX_IMAGE_PIXELS); downscale it first"
    )


def read_rgb(path: str | os.PathLike[str], decoder: Decoder = "pillow", *,
             what: str | None = None) -> np.ndarray:
    """Decode an image file.

    Args:
        path: the image file.
        decoder: "pillow" or "opencv".
        what: how to name the image in messages, e.g. ``"image id 7"``.

    Returns:
        ``[H, W, 3]`` uint8 RGB, C-contiguous and writable.

    Raises:
        DataError: the file cannot be read or decoded, is larger than Pillow's
            decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 Mpixels; the limit
            guards against files that would exhaust memory, whichever decoder is used), or
            has no pixels. The message names the file and the fix.
        ValueError: an unknown decoder.
    """
    check_decoder(decoder)
    where = f" ({what})" if what else ""
    fix = "Fix: replace the file with a readable JPEG/PNG or remove the image."
    check_pixel_limit(path, what)
    try:
        if decoder == "pillow":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    rgb = np.array(im.convert("RGB"))  # a writable copy
            except (UnidentifiedImageError, ValueError, SyntaxError) as err:
                raise OSError(str(err)) from None
        else:
            import cv2

            data = np.fromfile(os.fspath(path), dtype=np.uint8)  # OSError if unreadable
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            if bgr is None:
                raise OSError("OpenCV cannot decode it as an image")
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    except OSError as err:
        raise DataError(f"cannot read image file {path}{where}: {err}. {fix}") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DataError(f"image file {path}{where} has no pixels ({rgb.shape}). {fix}")
    return rgb
