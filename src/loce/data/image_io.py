"""Decoding image files to RGB arrays, with Pillow or with OpenCV (as mmcv does).

The decoder is a setting of the test pipeline (``data.test_resize``, see
:func:`loce.build.build_test_decoder`): "opencv" reproduces the original's
``mmcv.imfrombytes`` (``cv2.imdecode`` with ``IMREAD_COLOR`` on the file's bytes, BGR turned
into RGB), "pillow" is Pillow's ``Image.open(...).convert("RGB")``. Both give 3-channel
uint8 images: grey images are replicated, an alpha channel is dropped.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

__all__ = ["DECODERS", "Decoder", "check_decoder", "read_rgb"]

Decoder = Literal["pillow", "opencv"]
DECODERS: tuple[str, ...] = ("pillow", "opencv")


def check_decoder(decoder: str) -> Decoder:
    """``decoder`` if it names a decoder, else ValueError listing the choices."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(map(repr, DECODERS))}, got {decoder!r}")
    return decoder  # type: ignore[return-value]


def read_rgb(path: str | os.PathLike[str], decoder: Decoder = "pillow") -> np.ndarray:
    """Decode an image file.

    Args:
        path: the image file.
        decoder: "pillow" or "opencv".

    Returns:
        ``[H, W, 3]`` uint8 RGB, C-contiguous.

    Raises:
        OSError: the file cannot be read or decoded (the message says why; callers add the
            image's identity and the fix).
        ValueError: an unknown decoder.
    """
    if check_decoder(decoder) == "pillow":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"))  # a writable copy
        except (UnidentifiedImageError, ValueError) as err:
            raise OSError(str(err)) from None
    import cv2

    data = np.fromfile(os.fspath(path), dtype=np.uint8)  # raises OSError if unreadable
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise OSError("OpenCV cannot decode it as an image")
    return np.ascontiguousarray(bgr[:, :, ::-1])
