"""An index of a validated annotation file for fast per-image access.

Built once, in linear time with numpy: images by id, annotations grouped by image, the category
table (label ``i`` in ``1..K`` is category id ``cat_ids[i - 1]``), per-category frequency
(``'r'``/``'c'``/``'f'``) and per-image label sets. Polygon coordinates are packed into flat
float64 arrays, so the index of LVIS v1 train (1.27M annotations) holds a few numpy arrays
instead of millions of Python objects: memory stays low and forked data-loader workers see no
copy-on-write growth. Masks are decoded lazily, per item, by the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loce.data.lvis.validate import (
    Format,
    _check_and_extract,
    _Extracted,
    _source_name,
    load_lvis_json,
)


@dataclass(eq=False)
class LVISIndex:
    """A validated LVIS/COCO annotation file, indexed for fast per-image access.

    Build it with :meth:`from_json`. Images are rows ``0..I-1`` in file order; annotations are
    rows ``0..A-1`` in file order. Labels are ``1..K`` with ``cat_ids[label - 1]`` the category
    id (sorted ascending); label 0 is background and never appears here.

    Attributes:
        source: the file name (or ``"<annotation dict>"``) used in messages.
        format: ``"lvis_v1"`` (images named by ``coco_url``), ``"lvis_v0.5"`` (``file_name``
            plus category frequencies) or ``"coco"``.
        image_ids: ``[I]`` int64, image ids in file order.
        heights, widths: ``[I]`` int64 image sizes from the file.
        file_names: ``[I]`` numpy unicode array, image paths relative to an image root.
        cat_ids: the ``K`` category ids, sorted; label ``i`` is ``cat_ids[i - 1]``.
        cat_names: the ``K`` category names in label order.
        frequencies: ``'r'``/``'c'``/``'f'`` per label when every category has one, else None.
        label_of: category id -> label.
        ann_ids: ``[A]`` int64 annotation ids.
        ann_image_rows: ``[A]`` int64 image row of each annotation.
        ann_labels: ``[A]`` int64 label (``1..K``) of each annotation.
        ann_bbox: ``[A, 4]`` float64 boxes as in the file, ``(x, y, w, h)``.
        ann_iscrowd: ``[A]`` bool COCO crowd flag.
    """

    source: str
    format: Format
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    file_names: np.ndarray
    cat_ids: list[int]
    cat_names: list[str]
    frequencies: list[str] | None
    label_of: dict[int, int]
    ann_ids: np.ndarray
    ann_image_rows: np.ndarray
    ann_labels: np.ndarray
    ann_bbox: np.ndarray
    ann_iscrowd: np.ndarray
    _seg_kind: np.ndarray = field(repr=False)
    _ann_poly_offsets: np.ndarray = field(repr=False)
    _poly_offsets: np.ndarray = field(repr=False)
    _coords: np.ndarray = field(repr=False)
    _rles: dict[int, dict[str, Any]] = field(repr=False)
    _ann_order: np.ndarray = field(repr=False)
    _image_starts: np.ndarray = field(repr=False)
    _row_of_id: dict[int, int] = field(repr=False)
    #: Where ``frequencies`` come from: "file" (its own fields, or none) or "counts" (set from
    #: the training image counts, :func:`loce.build.assign_frequencies`).
    frequency_source: str = "file"

    @classmethod
    def from_json(
        cls,
        path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
        *,
        source: str | None = None,
    ) -> LVISIndex:
        """Load, validate and index an annotation file (or a parsed dict).

        Args:
            path_or_dict: JSON path or parsed dict.
            source: name used in messages; defaults to the path.

        Raises:
            DataError: unreadable file or invalid content (see :func:`validate_lvis`).
        """
        name = source or _source_name(path_or_dict)
        data = load_lvis_json(path_or_dict)
        ex = _check_and_extract(data, name)
        del data  # the index keeps compact arrays only; let the parsed JSON go
        return cls._from_extracted(ex, name)

    @classmethod
    def _from_extracted(cls, ex: _Extracted, source: str) -> LVISIndex:
        n_img = ex.image_ids.size
        # Group annotations by image with one stable sort: annotations of image row r are
        # _ann_order[_image_starts[r]:_image_starts[r + 1]], in file order.
        order = np.argsort(ex.ann_image_rows, kind="stable")
        counts = (
            np.bincount(ex.ann_image_rows, minlength=n_img)
            if order.size
            else np.zeros(n_img, np.int64)
        )
        starts = np.zeros(n_img + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        freqs = ex.cat_frequencies
        cat_ids = [int(c) for c in ex.cat_ids]
        return cls(
            source=source,
            format=ex.format,
            image_ids=ex.image_ids,
            heights=ex.heights,
            widths=ex.widths,
            file_names=np.array(ex.file_names, dtype=str) if ex.file_names else np.zeros(0, "U1"),
            cat_ids=cat_ids,
            cat_names=ex.cat_names,
            frequencies=[str(f) for f in freqs] if freqs and None not in freqs else None,
            label_of={c: i + 1 for i, c in enumerate(cat_ids)},
            ann_ids=ex.ann_ids,
            ann_image_rows=ex.ann_image_rows,
            ann_labels=ex.ann_labels,
            ann_bbox=ex.ann_bbox,
            ann_iscrowd=ex.ann_iscrowd,
            _seg_kind=ex.seg_kind,
            _ann_poly_offsets=ex.ann_poly_offsets,
            _poly_offsets=ex.poly_offsets,
            _coords=ex.coords,
            _rles=ex.rles,
            _ann_order=order,
            _image_starts=starts,
            _row_of_id={int(v): i for i, v in enumerate(ex.image_ids.tolist())},
        )

    # ---- sizes -----------------------------------------------------------------------------

    @property
    def num_images(self) -> int:
        return int(self.image_ids.size)

    @property
    def num_annotations(self) -> int:
        return int(self.ann_ids.size)

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.cat_ids)

    # ---- lookups ---------------------------------------------------------------------------

    def image_row(self, image_id: int) -> int:
        """Row of an image id. Raises KeyError for an unknown id."""
        return self._row_of_id[int(image_id)]

    def annotations_of(self, row: int) -> np.ndarray:
        """Annotation rows (int64, file order) of image row ``row``."""
        return self._ann_order[self._image_starts[row] : self._image_starts[row + 1]]

    def segmentation(self, ann_row: int) -> list[list[float]] | dict[str, Any] | None:
        """The annotation's segmentation as in the file: polygons, an RLE dict, or None."""
        kind = self._seg_kind[ann_row]
        if kind == 1:
            lo, hi = self._ann_poly_offsets[ann_row], self._ann_poly_offsets[ann_row + 1]
            po, xy = self._poly_offsets, self._coords
            return [xy[po[j] : po[j + 1]].tolist() for j in range(lo, hi)]
        if kind == 2:
            return self._rles[int(ann_row)]
        return None

    def has_segmentation(self) -> np.ndarray:
        """``[A]`` bool: whether each annotation has a segmentation."""
        return self._seg_kind > 0

    def image_labels(self, ann_mask: np.ndarray | None = None) -> list[np.ndarray]:
        """Sorted unique labels per image row, from all non-crowd annotations.

        Args:
            ann_mask: optional ``[A]`` bool; only annotations where it is True count.

        Returns:
            One int64 array per image row.
        """
        keep = ~self.ann_iscrowd if ann_mask is None else (ann_mask & ~self.ann_iscrowd)
        rows, labels = self.ann_image_rows[keep], self.ann_labels[keep]
        k1 = self.num_classes + 1
        pairs = np.unique(rows * k1 + labels)  # sorted by (row, label), duplicates removed
        pr, pl = pairs // k1, pairs % k1
        bounds = np.searchsorted(pr, np.arange(self.num_images + 1))
        return [pl[bounds[r] : bounds[r + 1]] for r in range(self.num_images)]

    def categories(self) -> list[dict[str, Any]]:
        """The category table in label order: ``{"id", "name", "frequency"?}`` per label."""
        out = []
        for i, (cid, name) in enumerate(zip(self.cat_ids, self.cat_names, strict=True)):
            entry: dict[str, Any] = {"id": cid, "name": name}
            if self.frequencies is not None:
                entry["frequency"] = self.frequencies[i]
            out.append(entry)
        return out
