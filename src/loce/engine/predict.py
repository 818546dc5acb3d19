"""Inference outside training: an image-folder dataset, model loading and visualisation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loce.data.image_io import Decoder, check_decoder
from loce.errors import DataError

__all__ = ["ImageFolder", "draw_detections"]

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

    def load_image(self, i: int) -> torch.Tensor:
        """Image ``i`` as ``[3, H, W]`` float32 in ``[0, 1]`` (grey and RGBA images are
        converted to RGB with a note, see :func:`loce.inference.read_image`)."""
        from loce.inference import read_image

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


def _color(label: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(label * 7919 + 17)
    return tuple(int(c) for c in rng.integers(40, 256, size=3))  # type: ignore[return-value]


def draw_detections(
    image: np.ndarray,
    det: dict[str, torch.Tensor],
    class_names: list[str],
    score_threshold: float = 0.3,
    max_shown: int = 50,
):
    """Draw boxes, masks and class names on an RGB uint8 image ``[H, W, 3]``; returns a PIL image.

    Args:
        image: the original image.
        det: ``boxes [n,4]`` xyxy, ``labels [n]`` in 1..K, ``scores [n]``, optional
            ``masks [n,1,H,W]`` bool, all in the original frame.
        class_names: name of label ``i`` at ``class_names[i - 1]``.
        score_threshold: draw detections scoring at least this.
        max_shown: draw at most this many (highest scores).
    """
    from PIL import Image, ImageDraw

    scores = det["scores"].float().cpu()
    keep = torch.nonzero(scores >= score_threshold).flatten()
    keep = keep[scores[keep].argsort(descending=True)][:max_shown]
    canvas = image.astype(np.float32).copy()
    if "masks" in det and len(keep):
        masks = det["masks"][keep].reshape(len(keep), *image.shape[:2]).cpu().numpy().astype(bool)
        for m, k in zip(masks, keep.tolist()):
            color = np.array(_color(int(det["labels"][k])), dtype=np.float32)
            canvas[m] = 0.5 * canvas[m] + 0.5 * color
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for k in keep.tolist()[::-1]:
        label = int(det["labels"][k])
        x1, y1, x2, y2 = (float(v) for v in det["boxes"][k])
        color = _color(label)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        text = f"{name} {float(scores[k]):.2f}"
        tw = draw.textlength(text)
        draw.rectangle([x1, max(0.0, y1 - 11), x1 + tw + 4, max(11.0, y1)], fill=color)
        draw.text((x1 + 2, max(0.0, y1 - 11)), text, fill=(0, 0, 0))
    return out
