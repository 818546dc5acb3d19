"""The category table of a converted checkpoint: LVIS ids and names in MMDetection's label order.

MMDetection's label ``i`` is ``meta["CLASSES"][i]``, the ``i``-th category of the annotation
file in file order; loce's label is ``i + 1`` (background is 0). With an annotation file
(``--gt``) every class name is looked up and the ids come from the file. Without one, LVIS
v0.5 names (K = 1230) are matched against the bundled v0.5 category table; otherwise label
``j`` gets category id ``j``: in the LVIS v1 and v0.5 annotation files the category ids run
1..K in label order (docs/parity.md §3.6).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from loce.errors import CheckpointError

__all__ = ["LVIS_V05_CLASSES", "CategoryTable", "resolve_categories"]

#: Classes of LVIS v0.5; its category table ships with loce (``loce/data/lvis_v0.5_categories
#: .json``, ids and names of the LVIS annotation files, CC BY 4.0), so v0.5 names resolve
#: without an annotation file. No LVIS v1 table is bundled.
LVIS_V05_CLASSES = 1230


def _bundled_v05() -> list[dict] | None:
    import json
    from importlib import resources

    path = resources.files("loce") / "data" / "lvis_v0.5_categories.json"
    if not path.is_file():  # pragma: no cover - shipped with the package
        return None
    return json.loads(path.read_text(encoding="utf-8"))["categories"]


@dataclass(frozen=True)
class CategoryTable:
    """``ids[j - 1]`` and ``names[j - 1]`` belong to loce label ``j``; ``how`` says where the
    ids came from (one line for the user)."""

    ids: list[int]
    names: list[str]
    how: str


def resolve_categories(num_classes: int, classes: Sequence[str] | None,
                       gt: str | os.PathLike | None = None, *,
                       source: str = "checkpoint") -> CategoryTable:
    """LVIS category ids and names for labels 1..K.

    Args:
        num_classes: K.
        classes: MMDetection's ``meta["CLASSES"]`` (names in label order), or None.
        gt: an LVIS/COCO annotation file to resolve the names against.
        source: the checkpoint, for messages.

    Raises:
        CheckpointError: ``CLASSES`` does not have K names, or a name is not in ``gt``.
        DataError: ``gt`` cannot be read.
    """
    k = int(num_classes)
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != k:
            raise CheckpointError(
                f"{source}: meta['CLASSES'] names {len(classes)} classes but the weights have "
                f"{k}; the checkpoint's metadata does not belong to its weights"
            )
    if gt is None:
        bundled = _bundled_v05() if k == LVIS_V05_CLASSES else None
        if bundled is not None:
            by_name = {c["name"]: c["id"] for c in bundled}
            if classes is None:
                return CategoryTable([c["id"] for c in bundled], [c["name"] for c in bundled],
                                     "the LVIS v0.5 categories in id order (bundled list; the "
                                     "checkpoint names none)")
            if all(name in by_name for name in classes):
                return CategoryTable([by_name[n] for n in classes], classes,
                                     f"category ids of LVIS v0.5, matched by name ({k} of {k} "
                                     "classes, bundled list)")
        names = classes if classes is not None else [f"class {j}" for j in range(1, k + 1)]
        how = (f"category ids 1..{k} in label order (LVIS files number their categories so; "
               "no annotation file given: pass --gt ann.json to resolve the names exactly)")
        return CategoryTable(list(range(1, k + 1)), names, how)
    from loce.data.lvis.validate import load_lvis_json

    data = load_lvis_json(gt)
    cats = [c for c in data.get("categories", []) if isinstance(c, dict)]
    by_name = {str(c.get("name")): int(c["id"]) for c in cats if "id" in c}
    if classes is None:
        if len(cats) != k:
            raise CheckpointError(
                f"{gt} has {len(cats)} categories but the weights have {k} classes; give the "
                "annotation file of the dataset the model was trained on"
            )
        ordered = sorted(cats, key=lambda c: int(c["id"]))
        return CategoryTable([int(c["id"]) for c in ordered], [str(c["name"]) for c in ordered],
                             f"categories of {gt} in id order (the checkpoint names none)")
    ids = []
    for j, name in enumerate(classes):
        if name not in by_name:
            raise CheckpointError(
                f"{source}: class {j} ({name!r}) of meta['CLASSES'] is not a category name of "
                f"{gt}; give the annotation file of the dataset the model was trained on"
            )
        ids.append(by_name[name])
    return CategoryTable(ids, classes, f"category ids of {gt}, matched by name "
                         f"({k} of {k} classes)")
