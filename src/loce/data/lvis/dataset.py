"""LVIS v0.5 / v1 or COCO instance segmentation as ``(image, target)`` items.

Shape shorthand: ``N`` annotations kept for one image, ``H``/``W`` image height and width in
pixels, ``K`` foreground classes (labels ``1..K``).

Image files are looked up under the image root by the name the annotation file gives:

* LVIS v1: ``coco_url``'s last two components (``train2017/000000123456.jpg``), then its last.
* LVIS v0.5: ``file_name`` (``COCO_val2014_000000123456.jpg``), then the COCO-2017 name (its
  last 16 characters), since LVIS images are distributed as COCO-2017 files.
* COCO: ``file_name``; annotations with ``iscrowd = 1`` stay in the index but never become
  training targets.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loce.data.image_io import Decoder, check_decoder, read_rgb
from loce.data.lvis.index import LVISIndex
from loce.errors import DataError

if TYPE_CHECKING:
    import torch


def _candidate_paths(root: Path, rel: str) -> list[Path]:
    """Where an image named ``rel`` may live under ``root`` (see the module docstring)."""
    out = [root / rel]
    base = rel.rsplit("/", 1)[-1]
    if base != rel:
        out.append(root / base)
    # LVIS v0.5 names images COCO_val2014_000000123456.jpg; the COCO-2017 file is the
    # 12-digit id plus extension (the last 16 characters).
    if base.startswith("COCO_") and len(base) > 16:
        out.append(root / base[-16:])
        if base != rel:
            out.append(root / rel.rsplit("/", 1)[0] / base[-16:])
    return out


def _clipped_boxes(index: LVISIndex) -> np.ndarray:
    """Clipped xyxy boxes of every annotation, ``[A, 4]`` float32 (vectorised)."""
    rows = index.ann_image_rows
    w_img = index.widths[rows].astype(np.float64)
    h_img = index.heights[rows].astype(np.float64)
    x, y, bw, bh = index.ann_bbox.T
    x1, y1 = np.clip(x, 0, w_img), np.clip(y, 0, h_img)
    x2, y2 = np.clip(x + bw, 0, w_img), np.clip(y + bh, 0, h_img)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def _group_by_image(
    index: LVISIndex, usable: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Usable annotations grouped by image (file order within an image).

    Returns:
        ``(rows, starts, counts)``: the annotations of image row ``r`` are
        ``rows[starts[r]:starts[r + 1]]``; ``counts[r]`` is how many there are.
    """
    order = np.flatnonzero(usable[index._ann_order])
    usable_sorted = index._ann_order[order]
    per_image = np.bincount(index.ann_image_rows[usable_sorted], minlength=index.num_images)
    starts = np.zeros(index.num_images + 1, np.int64)
    np.cumsum(per_image, out=starts[1:])
    return usable_sorted, starts, per_image


class LVISDataset:
    """LVIS v0.5 / v1 or COCO instance segmentation as ``(image, target)`` items.

    A map-style dataset (``__len__`` + ``__getitem__``) usable with
    ``torch.utils.data.DataLoader``. Torch is imported lazily, so importing
    :mod:`loce.data.lvis` (for :func:`validate_lvis`) stays cheap.

    Each item is ``(image, target)``:

    * ``image``: ``[3, H, W]`` float32 RGB in ``[0, 1]`` (decoded with Pillow, or OpenCV as
      the original's mmcv, see ``decoder``);
    * ``target["boxes"]``: ``[N, 4]`` float32 ``(x1, y1, x2, y2)``; the file's ``(x, y, w, h)``
      becomes ``(x, y, x + w, y + h)``, clipped to the image;
    * ``target["labels"]``: ``[N]`` int64 in ``1..K``;
    * ``target["masks"]``: ``[N, H, W]`` uint8 in ``{0, 1}`` (only with ``with_masks``);
    * ``target["image_id"]``: int;
    * ``target["orig_size"]``: ``[2]`` int64 ``(H, W)`` of the file's image;
    * ``target["scale_factor"]``: ``[4]`` float32 ``(sx, sy, sx, sy)`` from the original
      image to the current one (ones until a resize transform changes it), so that
      ``boxes / scale_factor`` maps predictions back to the original image.

    Crowd annotations never become targets. Boxes with no area after clipping to the image
    (or narrower/shorter than ``min_box_size`` pixels) are dropped together with their masks;
    the dataset warns once, at construction, with their count.

    Args:
        ann_file: annotation JSON path, parsed dict, or an :class:`LVISIndex`.
        image_root: folder holding the images (see the module docstring for name lookup).
        train: training mode. Sets the default of ``filter_empty``.
        transforms: callable ``(image, target) -> (image, target)`` applied last.
        filter_empty: drop images with no usable annotation; default ``train``.
        with_masks: decode instance masks (needs ``segmentation`` on every annotation).
        min_box_size: a box is kept when its clipped width and height are both positive and at
            least this many pixels; ``0`` keeps every box with positive area. (MMDetection
            drops boxes whose unclipped width or height is below 1 px; ``1.0`` is the nearest
            setting.)
        decoder: "pillow" or "opencv" (:func:`loce.data.image_io.read_rgb`); the test
            pipeline picks it with ``data.test_resize`` (:func:`loce.build.build_test_decoder`).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike[str] | Mapping[str, Any] | LVISIndex,
        image_root: str | os.PathLike[str],
        *,
        train: bool,
        transforms: Any = None,
        filter_empty: bool | None = None,
        with_masks: bool = True,
        min_box_size: float = 0.0,
        decoder: Decoder = "pillow",
    ) -> None:
        self.decoder = check_decoder(decoder)
        index = ann_file if isinstance(ann_file, LVISIndex) else LVISIndex.from_json(ann_file)
        self.index = index
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise DataError(
                f"image root {self.image_root} is not a folder (annotations: {index.source}). "
                "Fix: pass the folder that holds the images."
            )
        self.train = train
        self.transforms = transforms
        self.with_masks = with_masks
        self.filter_empty = train if filter_empty is None else filter_empty
        if min_box_size < 0 or not math.isfinite(min_box_size):
            raise ValueError(f"min_box_size must be a finite number >= 0, got {min_box_size}")

        self._boxes_xyxy = _clipped_boxes(index)
        non_crowd = ~index.ann_iscrowd
        # sizes of the float32 boxes the model will see
        cw = self._boxes_xyxy[:, 2] - self._boxes_xyxy[:, 0]
        ch = self._boxes_xyxy[:, 3] - self._boxes_xyxy[:, 1]
        big = (cw > 0) & (ch > 0) & (cw >= min_box_size) & (ch >= min_box_size)
        self._usable = non_crowd & big
        dropped = np.flatnonzero(non_crowd & ~big)
        self.num_dropped_boxes = int(dropped.size)
        if dropped.size:
            first = int(dropped[0])
            warnings.warn(
                f"{index.source}: dropped {dropped.size} of {index.num_annotations} annotation "
                f"boxes that are empty after clipping to their image"
                + (f" or smaller than {min_box_size} px" if min_box_size > 0 else "")
                + f" (first: annotations[{first}] (id {int(index.ann_ids[first])}), bbox "
                f"{index.ann_bbox[first].tolist()}).",
                stacklevel=2,
            )
        if with_masks:
            missing = np.flatnonzero(self._usable & ~index.has_segmentation())
            if missing.size:
                i = int(missing[0])
                raise DataError(
                    f"{index.source}: {missing.size} annotations have no 'segmentation' (first: "
                    f"annotations[{i}] (id {int(index.ann_ids[i])})), so masks cannot be built. "
                    "Fix: add segmentations, or build the dataset with with_masks=False for "
                    "box-only training."
                )

        self._usable_sorted, self._usable_starts, per_image = _group_by_image(index, self._usable)

        image_rows = np.arange(index.num_images)
        if self.filter_empty:
            image_rows = image_rows[per_image > 0]
            if image_rows.size == 0:
                raise DataError(
                    f"{index.source}: no image has a usable annotation ({index.num_images} "
                    f"images, {index.num_annotations} annotations, {int(index.ann_iscrowd.sum())}"
                    f" crowd, {dropped.size} empty boxes), so there is nothing to train on. "
                    "Fix: pass the training annotation file, or filter_empty=False."
                )
        self.rows = image_rows  # dataset item i is image row self.rows[i]

    # ---- what samplers and batching need (no image decoding) -------------------------------

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (labels ``1..K``)."""
        return self.index.num_classes

    @property
    def categories(self) -> list[dict[str, Any]]:
        """Category table in label order (label ``i`` is ``categories[i - 1]``)."""
        return self.index.categories()

    @property
    def cat_ids(self) -> list[int]:
        return self.index.cat_ids

    @property
    def label_of(self) -> dict[int, int]:
        return self.index.label_of

    @property
    def frequencies(self) -> list[str] | None:
        """``'r'``/``'c'``/``'f'`` per label (LVIS), or None when the file has none."""
        return self.index.frequencies

    @property
    def image_ids(self) -> list[int]:
        return self.index.image_ids[self.rows].tolist()

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` per item, from the annotation file."""
        h, w = self.index.heights[self.rows].tolist(), self.index.widths[self.rows].tolist()
        return list(zip(h, w, strict=True))

    @property
    def image_labels(self) -> list[list[int]]:
        """Sorted unique labels per item, from its usable annotations (for samplers)."""
        per_row = self.index.image_labels(self._usable)
        return [per_row[r].tolist() for r in self.rows.tolist()]

    def annotation_rows(self, i: int) -> np.ndarray:
        """Index rows of the annotations that become item ``i``'s targets."""
        r = self.rows[i]
        return self._usable_sorted[self._usable_starts[r] : self._usable_starts[r + 1]]

    # ---- items -----------------------------------------------------------------------------

    def image_path(self, i: int) -> Path:
        """Path of item ``i``'s image file (the first candidate that exists)."""
        r = int(self.rows[i])
        cands = _candidate_paths(self.image_root, str(self.index.file_names[r]))
        for p in cands:
            if p.is_file():
                return p
        raise DataError(
            f"image file not found for image id {int(self.index.image_ids[r])} "
            f"({self.index.source}, images[{r}]): looked for "
            + ", ".join(str(p) for p in cands)
            + ". Fix: point the image root at the folder that holds the images"
            + (
                " (for LVIS v1, the COCO folder containing train2017/ and val2017/)."
                if self.index.format == "lvis_v1"
                else "."
            )
        )

    def load_image(self, i: int) -> torch.Tensor:
        """Item ``i``'s image as ``[3, H, W]`` float32 in ``[0, 1]``."""
        import torch

        r = int(self.rows[i])
        image_id = int(self.index.image_ids[r])
        path = self.image_path(i)
        rgb = read_rgb(path, self.decoder, what=f"image id {image_id}")
        h, w = int(self.index.heights[r]), int(self.index.widths[r])
        if rgb.shape[:2] != (h, w):
            raise DataError(
                f"image file {path} (image id {image_id}) is {rgb.shape[0]}x{rgb.shape[1]} "
                f"(HxW) but {self.index.source} says {h}x{w}. Fix: use the original image "
                "files the annotations were made for."
            )
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)

    def decode_masks(self, ann_rows: np.ndarray, height: int, width: int) -> np.ndarray:
        """Decode annotations' masks with pycocotools.

        Args:
            ann_rows: ``[N]`` annotation rows.
            height, width: image size (RLE sizes were checked against it at load time).

        Returns:
            ``[N, H, W]`` uint8 in ``{0, 1}``.
        """
        from pycocotools import mask as mask_utils

        if len(ann_rows) == 0:
            return np.zeros((0, height, width), np.uint8)
        rles = []
        for a in ann_rows.tolist():
            seg = self.index.segmentation(a)
            try:
                if isinstance(seg, list):
                    if seg:
                        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
                    else:  # an empty polygon list: an empty mask
                        rle = mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
                else:
                    assert isinstance(seg, dict)
                    if isinstance(seg["counts"], list):  # uncompressed RLE
                        rle = mask_utils.frPyObjects(seg, height, width)
                    else:
                        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
                rles.append(rle)
            except Exception as e:  # pycocotools raises bare Exceptions on malformed RLEs
                raise DataError(
                    f"{self.index.source}: annotations[{a}] (id {int(self.index.ann_ids[a])}): "
                    f"cannot decode 'segmentation': {e}. Fix: re-encode the mask with "
                    "pycocotools (polygons or RLE at the image size)."
                ) from None
        masks = mask_utils.decode(rles)  # [H, W, N], Fortran order
        return np.ascontiguousarray(masks.transpose(2, 0, 1))

    def get_target(self, i: int) -> dict[str, Any]:
        """Item ``i``'s target without decoding the image (see the class docstring)."""
        import torch

        r = int(self.rows[i])
        h, w = int(self.index.heights[r]), int(self.index.widths[r])
        anns = self.annotation_rows(i)
        target: dict[str, Any] = {
            "boxes": torch.from_numpy(self._boxes_xyxy[anns].reshape(-1, 4)),
            "labels": torch.from_numpy(self.index.ann_labels[anns].astype(np.int64)),
            "image_id": int(self.index.image_ids[r]),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
            "scale_factor": torch.ones(4, dtype=torch.float32),
        }
        if self.with_masks:
            target["masks"] = torch.from_numpy(self.decode_masks(anns, h, w))
        return target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)} images")
        i = i % len(self)
        image = self.load_image(i)
        target = self.get_target(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"LVISDataset({self.index.source!r}, images={len(self)}, "
            f"classes={self.num_classes}, train={self.train}, format={self.index.format!r})"
        )
