"""LVIS evaluation fields for annotation files that lack them (COCO-format data).

LVIS evaluation needs, per category, its frequency group (``r``/``c``/``f``, for
APr/APc/APf) and, per image, the federated lists ``neg_category_ids`` (categories verified
absent) and ``not_exhaustive_category_ids``. A COCO file has neither: it is exhaustively
annotated, so every category without an annotation in an image is a verified negative
there, and no image is marked not exhaustive. With those lists the federated protocol
evaluates every (image, category) pair, as COCO's protocol does; crowd annotations are
matched as COCO does (a detection on a crowd region is ignored, not a false positive).

The groups come from the *training* split (:func:`loce.data.statistics.frequency_of_counts`),
as LVIS's validation file carries the training groups. Fields the file has are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loce.errors import DataError

__all__ = ["needs_evaluation_fields", "with_evaluation_fields"]

_FEDERATED = ("neg_category_ids", "not_exhaustive_category_ids")


def needs_evaluation_fields(data: Mapping[str, Any]) -> bool:
    """Whether some category lacks ``frequency`` or some image a federated list."""
    cats = data.get("categories") or []
    images = data.get("images") or []
    return (any(isinstance(c, Mapping) and "frequency" not in c for c in cats)
            or any(isinstance(im, Mapping) and any(k not in im for k in _FEDERATED)
                   for im in images))


def with_evaluation_fields(data: Mapping[str, Any], frequencies: Mapping[int, str],
                           source: str) -> dict[str, Any]:
    """A copy of ``data`` with the LVIS evaluation fields it lacks (see the module docstring).

    Args:
        data: a parsed (and validated) annotation dict.
        frequencies: category id -> ``"r"``/``"c"``/``"f"``, from the training split.
        source: the file's name, for messages.

    Returns:
        A new dict; its lists are new, the annotations are shared with ``data``.

    Raises:
        DataError: a category without ``frequency`` that ``frequencies`` does not know.
    """
    categories = []
    for i, cat in enumerate(data["categories"]):
        if "frequency" not in cat:
            code = frequencies.get(cat["id"])
            if code is None:
                raise DataError(
                    f"{source}: categories[{i}] (id {cat['id']}) is not a category of the "
                    "training annotations, so it has no frequency group. Fix: use annotation "
                    "files with the same categories (data.train_ann and data.val_ann)."
                )
            cat = {**cat, "frequency": code}
        categories.append(cat)
    all_ids = sorted(int(c["id"]) for c in categories)
    present: dict[int, set[int]] = {}
    for ann in data.get("annotations", []):
        present.setdefault(ann["image_id"], set()).add(ann["category_id"])
    images = []
    for im in data["images"]:
        if any(k not in im for k in _FEDERATED):
            pos = present.get(im["id"], set())
            im = {**im, "neg_category_ids": [c for c in all_ids if c not in pos],
                  "not_exhaustive_category_ids": im.get("not_exhaustive_category_ids", [])}
        images.append(im)
    return {**data, "images": images, "categories": categories}
