"""Inference outside training: an image-folder dataset, model loading and visualisation."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loce.data.image_io import Decoder, check_decoder
from loce.errors import DataError

__all__ = ["ImageFolder", "class_color", "draw_detections", "save_picture"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageFolder:
    """Every image file in a folder (sorted by name), for prediction without annotations.

    Items are ``(image [3,H,W] float in [0,1], {"image_id", "orig_size", "file_name"})``;
    image ids are 1, 2, ... in file-name order.

    Args:
        root: the folder.
        transforms: test-time transform ``(image, target) -> (image, target)``.
        category_ids: label ``i`` ↔ ``category_ids[i - 1]`` (from the checkpoint).
        decoder: "pillow" or "opencv" (:func:`loce.data.image_io.read_rgb`; the test
            pipeline's choice is :func:`loce.build.build_test_decoder`).
    """

    def __init__(self, root: str | os.PathLike, transforms, category_ids: list[int],
                 decoder: Decoder = "pillow") -> None:
        self.decoder = check_decoder(decoder)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"--images {self.root}: not a folder")
        self.files = sorted(p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise DataError(f"--images {self.root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self.transforms = transforms
        self.cat_ids = list(category_ids)

    def __len__(self) -> int:
        return len(self.files)

    def image_path(self, i: int) -> Path:
        return self.files[i]

    def load_image(self, i: int) -> torch.Tensor:
        """Image ``i`` as ``[3, H, W]`` float32 in ``[0, 1]`` (grey and RGBA images are
        converted to RGB with a note, see :func:`loce.data.image_io.read_image`)."""
        from loce.data.image_io import read_image

        path = self.files[i]
        try:
            arr, note = read_image(path, self.decoder)
        except DataError as err:
            raise DataError(f"image id {i + 1}: {err}") from None
        if note is not None:
            print(f"note: {path.name}: {note}")
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, i: int):
        image = self.load_image(i)
        h, w = image.shape[-2:]
        path = self.files[i]
        target: dict[str, Any] = {"image_id": i + 1, "orig_size": torch.tensor([int(h), int(w)]),
                                  "file_name": path.name}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def class_color(label: int) -> tuple[int, int, int]:
    """The colour of class ``label`` in every picture: saturated hues a golden angle apart, so
    neighbouring labels differ clearly and a class keeps its colour across images and runs."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label_position(box: tuple[float, float, float, float], text_size: tuple[int, int],
                    image_size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a label: above the box, or inside its top edge where there is no
    room above; moved left and down as needed so that the whole label stays in the image."""
    x1, y1 = box[0], box[1]
    tw, th = text_size
    w, h = image_size
    x = min(max(0, int(x1)), max(0, w - tw))
    y = int(y1) - th if y1 - th >= 0 else int(y1)
    return x, min(max(0, y), max(0, h - th))


def draw_detections(
    image: np.ndarray,
    det: dict[str, torch.Tensor],
    class_names: list[str],
    score_threshold: float = 0.3,
    max_shown: int = 50,
    *,
    mask_alpha: float = 0.45,
    box_width: int = 2,
    font_size: int | None = None,
):
    """Draw masks, boxes and class names on an RGB image; returns a PIL image.

    Masks and boxes are drawn with ``torchvision.utils.draw_segmentation_masks`` and
    ``draw_bounding_boxes`` in the colour of their class (:func:`class_color`); each label
    ("name score") sits on a filled box of that colour above its detection and is moved so
    that it is never cut at the image's edge.

    Args:
        image: the original image, ``[H, W, 3]`` uint8.
        det: ``boxes [n,4]`` float xyxy, ``labels [n]`` int64 in 1..K, ``scores [n]`` float,
            optional ``masks [n,1,H,W]`` bool or float in [0, 1], all in the original frame.
        class_names: name of label ``i`` at ``class_names[i - 1]``.
        score_threshold: draw detections scoring at least this.
        max_shown: draw at most this many (highest scores).
        mask_alpha: opacity of the mask tint.
        box_width: box outline width in pixels.
        font_size: label text height in pixels (default: about 1/28 of the shorter side, >= 10).
    """
    from PIL import Image, ImageDraw
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    h, w = image.shape[:2]
    scores = det["scores"].detach().float().cpu()
    keep = torch.nonzero(scores >= score_threshold).flatten()
    keep = keep[scores[keep].argsort(descending=True)][:max_shown]
    canvas = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    if len(keep) == 0:
        return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    labels = [int(v) for v in det["labels"].detach().cpu()[keep]]
    colors = [class_color(label) for label in labels]
    if "masks" in det:
        masks = det["masks"].detach().cpu()[keep].reshape(len(keep), h, w)
        masks = masks if masks.dtype == torch.bool else masks >= 0.5
        canvas = draw_segmentation_masks(canvas, masks, alpha=mask_alpha, colors=colors)
    boxes = det["boxes"].detach().float().cpu()[keep]
    canvas = draw_bounding_boxes(canvas, boxes, colors=colors, width=box_width)
    out = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(out)
    font = _font(font_size or max(10, round(min(h, w) / 28)))
    # lowest score first, so that the best detections' labels end up on top
    for k in reversed(range(len(keep))):
        label, color = labels[k], colors[k]
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        text = f"{name} {float(scores[keep[k]]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        size = (right - left + 4, bottom - top + 2)
        x, y = _label_position(tuple(float(v) for v in boxes[k]), size, (w, h))
        draw.rectangle([x, y, x + size[0] - 1, y + size[1] - 1], fill=color)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        draw.text((x + 2 - left, y + 1 - top), text, fill=ink, font=font)
    return out


def save_picture(picture, path: str | os.PathLike) -> Path:
    """Write a PIL image atomically, in the format its file name's extension names."""
    from PIL import Image

    from loce.fileio import atomic_write

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    options = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_write(path, "wb", what="picture") as f:
        picture.save(f, format=fmt, **options)
    return path
