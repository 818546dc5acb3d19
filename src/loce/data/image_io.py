"""Decoding image files to RGB arrays, with Pillow or with OpenCV (as mmcv does).

The decoder is a setting of the test pipeline (``data.test_resize``, see
:func:`loce.build.build_test_decoder`): "opencv" reproduces the original's
``mmcv.imfrombytes`` (``cv2.imdecode`` with ``IMREAD_COLOR`` on the file's bytes, BGR turned
into RGB), "pillow" is Pillow's ``Image.open(...).convert("RGB")``. Both give 3-channel
uint8 images: grey images are replicated, an alpha channel is dropped.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from loce.errors import DataError

__all__ = [
    "DECODERS",
    "MAX_PIXELS",
    "Decoder",
    "check_decoder",
    "check_pixel_limit",
    "read_image",
    "read_rgb",
    "to_rgb_array",
]

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


# ---------------------------------------------------------------------- any input to RGB


#: Image files with more pixels than this are refused (Pillow's own default limit, about
#: 89.5 megapixels; a 14000 x 14000 image has 196).
MAX_PIXELS = 89_478_485


def describe_input(source: Any) -> str:
    """How a message names an image input: its path, or its type."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"the {type(source).__name__} input"


def _mode_note(mode: str) -> str | None:
    """The note for an image file of Pillow mode ``mode`` (None for RGB)."""
    if mode == "RGB":
        return None
    what = {"L": "grey", "1": "black-and-white", "LA": "grey + alpha", "RGBA": "RGBA",
            "P": "palette", "PA": "palette + alpha", "CMYK": "CMYK",
            "I;16": "16-bit grey", "I": "32-bit grey", "F": "float grey"}.get(mode, mode)
    return f"{what} image converted to RGB"


def _from_pil(im, where: str) -> tuple[np.ndarray, str | None]:
    if im.width == 0 or im.height == 0:
        raise DataError(f"{where}: the image is {im.width}x{im.height} pixels (a zero side)")
    note = _mode_note(im.mode)
    if note is not None:
        if im.mode in ("I;16", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode == "I;16" else max(float(arr.max()), 1.0)
            grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2), note
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8), note


def read_image(path: str | os.PathLike, decoder: str = "pillow") -> tuple[np.ndarray, str | None]:
    """Decode an image file to RGB.

    Args:
        path: the image file.
        decoder: "pillow", or "opencv" as the original's loader decodes
            (:func:`loce.data.image_io.read_rgb`; the config's choice is
            :func:`loce.build.build_test_decoder`).

    Returns:
        ``(image [H, W, 3] uint8, note)``; ``note`` says when a grey, alpha or palette image
        was converted to RGB (None otherwise).

    Raises:
        DataError: not a readable image, a zero side, or more than Pillow's
            decompression-bomb limit (:data:`MAX_PIXELS` by default).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    if check_decoder(decoder) != "pillow":
        # The pixels come from the configured decoder, with its own pixel-limit and
        # empty-image checks (OpenCV replicates grey and drops alpha as Pillow's conversion
        # does); Pillow's header, where it can read one, gives the note.
        rgb = read_rgb(path, decoder)  # type: ignore[arg-type]
        try:
            with Image.open(path) as im:
                return rgb, _mode_note(im.mode)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return rgb, None
    check_pixel_limit(path)
    try:
        with Image.open(path) as im:
            im.load()
            return _from_pil(im, str(path))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read the image ({err}); give a JPEG, PNG, BMP or "
                        "WebP file") from None


def to_rgb_array(image: Any, decoder: str = "pillow") -> tuple[np.ndarray, str | None]:
    """Any accepted input as ``(RGB [H, W, 3] uint8, note)`` (see the module docstring).

    Accepted: a path, a PIL image, an ``[H, W, 3]`` (or ``[H, W]`` grey, ``[H, W, 4]`` RGBA)
    uint8 array, or a ``[3, H, W]`` (``[1, H, W]``, ``[4, H, W]``) tensor, float in ``[0, 1]``
    or uint8.

    Raises:
        DataError: an input of another type, shape or dtype, or with a zero side.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, decoder)
    where = describe_input(image)
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            return _from_pil(image, where)
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    # A tensor exists only once torch is imported: reading files must not import it.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            hint = " (an [H, W, 3] tensor: pass image.permute(2, 0, 1))" if (
                t.dim() == 3 and t.shape[-1] in (1, 3, 4)) else ""
            raise DataError(f"{where}: expected a [3, H, W] tensor, got shape {list(t.shape)}{hint}")
        if t.dtype == torch.uint8:
            arr = t.permute(1, 2, 0).numpy()
        elif t.is_floating_point():
            arr = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        else:
            raise DataError(f"{where}: expected a float tensor in [0, 1] or uint8, got {t.dtype}")
        return _from_array(arr, where, channels_last=True)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise DataError(f"{where}: expected uint8 values 0-255, got {image.dtype}; convert "
                            "with (a * 255).round().astype(np.uint8) if it holds 0-1 floats")
        return _from_array(image, where, channels_last=False)
    raise DataError(f"{where}: expected a file path, a PIL image, an HxWx3 uint8 array or a "
                    "[3, H, W] tensor")


def _from_array(arr: np.ndarray, where: str, *, channels_last: bool) -> tuple[np.ndarray, str | None]:
    shape = "[C, H, W]" if channels_last else "[H, W, 3]"
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(f"{where}: expected a {shape} image, got shape {list(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{where}: the image is {arr.shape[1]}x{arr.shape[0]} pixels (a zero side)")
    note = None
    if arr.shape[2] == 1:
        arr, note = np.repeat(arr, 3, axis=2), "grey image converted to RGB"
    elif arr.shape[2] == 4:
        arr, note = arr[..., :3], "RGBA image converted to RGB (alpha dropped)"
    arr = np.ascontiguousarray(arr)
    # np.asarray(PIL image) is read-only: torch.from_numpy would warn and share it
    return (arr if arr.flags.writeable else arr.copy()), note
