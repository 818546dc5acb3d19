"""What an annotation file holds, before anything is trained on it.

:func:`summarize_split` counts images, instances, crowd regions, images without
annotations, the training images of each class and its frequency group; with an image
root, the image files that cannot be found. :func:`format_split_summary` prints it.
``loce summarize`` and the training log show it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from loce.data.lvis.dataset import LVISDataset, _candidate_paths
from loce.data.lvis.index import LVISIndex
from loce.data.statistics import LVIS_THRESHOLDS, class_statistics, frequency_of_counts

__all__ = ["format_split_summary", "missing_image_files", "summarize_split"]


def missing_image_files(index: LVISIndex, root: str | os.PathLike[str],
                        sample: int | None = None) -> list[str]:
    """File names of ``index``'s images that are not found under ``root``.

    Args:
        sample: check this many images spread evenly over the file (first and last
            included); None checks every image.
    """
    n = index.num_images
    rows = range(n) if sample is None or sample >= n else np.unique(
        np.linspace(0, n - 1, max(sample, 2)).round().astype(int)).tolist()
    root = Path(root)
    names = index.file_names
    return [str(names[r]) for r in rows
            if not any(p.is_file() for p in _candidate_paths(root, str(names[r])))]


def summarize_split(index: LVISIndex, thresholds=LVIS_THRESHOLDS, *,
                    image_root: str | os.PathLike[str] | None = None,
                    dataset: LVISDataset | None = None) -> dict[str, Any]:
    """Counts of one annotation file as a training split (see the module docstring).

    Args:
        index: the file.
        thresholds: ``(rare_max, common_max)`` for a file without ``frequency`` fields.
        image_root: when given, the image files are looked up under it.
        dataset: the training set built on ``index`` (counted as it is trained on); None
            builds one without opening images.

    Returns:
        A dict: ``source``, ``images``, ``instances`` (non-crowd), ``crowd``, ``classes``,
        ``empty_images``, per class (label order) ``ids``, ``names``, ``image_counts`` and
        ``groups``; ``group_source`` ("file" or "counts"), ``thresholds``, ``group_sizes``,
        ``head_to_tail`` (most over fewest training images among classes that have any),
        ``classes_without_images`` (ids) and, with ``image_root``, ``missing_files``.
    """
    if dataset is None:
        root = image_root if image_root is not None and Path(image_root).is_dir() else \
            Path(index.source).resolve().parent
        dataset = LVISDataset(index, root, train=True, with_masks=False, filter_empty=False)
    counts = list(class_statistics(dataset).image_counts)
    from_file = index.frequencies is not None and index.frequency_source == "file"
    groups = list(index.frequencies) if from_file else frequency_of_counts(counts, thresholds)
    crowd = int(index.ann_iscrowd.sum())
    per_image = np.bincount(index.ann_image_rows[~index.ann_iscrowd], minlength=index.num_images)
    seen = [n for n in counts if n > 0]
    out: dict[str, Any] = {
        "source": index.source,
        "images": index.num_images,
        "instances": index.num_annotations - crowd,
        "crowd": crowd,
        "classes": index.num_classes,
        "empty_images": int((per_image == 0).sum()),
        "ids": list(index.cat_ids),
        "names": list(index.cat_names),
        "image_counts": counts,
        "groups": groups,
        "group_source": "file" if from_file else "counts",
        "thresholds": [int(t) for t in thresholds],
        "group_sizes": {g: groups.count(g) for g in ("r", "c", "f")},
        "head_to_tail": (max(seen) / min(seen)) if seen else None,
        "classes_without_images": [c for c, n in zip(index.cat_ids, counts) if n == 0],
    }
    if image_root is not None:
        out["missing_files"] = missing_image_files(index, image_root)
    return out


def format_split_summary(s: dict[str, Any], other: dict[str, Any] | None = None) -> str:
    """The summary as a few lines; ``other`` (a second split, e.g. val) adds the classes
    that one split has and the other lacks."""
    sizes = s["group_sizes"]
    rare_max, common_max = s["thresholds"]
    rule = ("from the file's 'frequency' fields" if s["group_source"] == "file" else
            f"training images per class: r 1-{rare_max}, c {rare_max + 1}-{common_max}, "
            f"f > {common_max}")
    ratio = "n/a" if s["head_to_tail"] is None else f"{s['head_to_tail']:.1f}"
    lines = [
        f"{s['source']}: {s['images']} images ({s['empty_images']} without annotations), "
        f"{s['instances']} instances, {s['crowd']} crowd, {s['classes']} classes",
        f"groups: {sizes['r']} rare, {sizes['c']} common, {sizes['f']} frequent ({rule}); "
        f"head-to-tail ratio {ratio} (training images of the most / least frequent class)",
    ]
    if s["classes_without_images"]:
        ids = s["classes_without_images"]
        lines.append(f"{len(ids)} classes have no training image (ids {_ids(ids)}): they count as"
                     " rare, and their AP is -1 (no ground truth) unless val has them")
    if other is not None:
        only = sorted(set(s["ids"]) - set(other["ids"]))
        lack = sorted(set(other["ids"]) - set(s["ids"]))
        absent = [c for c, n in zip(other["ids"], other["image_counts"]) if n == 0]
        if only or lack:
            lines.append(f"categories differ: only in {s['source']}: {_ids(only)}; only in "
                         f"{other['source']}: {_ids(lack)}")
        if absent:
            lines.append(f"{len(absent)} classes have no instance in {other['source']} "
                         f"(ids {_ids(absent)}): their AP there is -1")
    for split in (s, other):
        if split is not None and "missing_files" in split:
            miss = split["missing_files"]
            lines.append(f"{split['source']}: {len(miss)} of {split['images']} image files "
                         "missing" + (f" (first: {miss[0]})" if miss else ""))
    return "\n".join(lines)


def _ids(ids: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "") if ids else "none"
