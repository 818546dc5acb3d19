"""The dataset on disk: images, LVIS v1 annotation files and the class-frequency summary.

Layout written by :func:`generate`::

    DIR/train/000000000001.jpg ...        training images
    DIR/val/000000001501.jpg ...          validation images (ids continue after train)
    DIR/annotations/train.json            LVIS v1 annotations
    DIR/annotations/val.json
    DIR/summary.json                      class-frequency table, thresholds, config

As in LVIS v1, images are named by ``coco_url`` and carry no ``file_name`` (loaders take it as
the mark of LVIS v0.5 or COCO); the URL's last two components resolve under ``DIR``, its
basename under ``DIR/<split>``, and its host (``loce.invalid``) never resolves: nothing is
downloaded. Annotation is exhaustive (``not_exhaustive_category_ids`` is empty), and the val
file's categories carry the *training* ``frequency``, ``image_count`` and ``instance_count``,
as LVIS's do.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loce.data.synthetic.config import SPLITS, SynthConfig, _frequency_of
from loce.data.synthetic.plan import DatasetPlan, plan_dataset
from loce.data.synthetic.polygons import mask_to_polygons
from loce.data.synthetic.render import render_image
from loce.errors import LoceError
from loce.fileio import atomic_write, atomic_write_json, ensure_directory

URL_PREFIX = "http://loce.invalid/synthetic/"


def _annotate(polygons: list[list[float]], size: int) -> tuple[float, list[float]]:
    """Area and xywh box of the mask the polygons decode to (pycocotools)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
    area = float(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return area, bbox


# Per-process state of the rendering workers.
_WORKER: dict[str, Any] = {}


def _init_worker(plan: DatasetPlan, out_dir: str) -> None:
    _WORKER["plan"] = plan
    _WORKER["out_dir"] = out_dir


def _render_and_save(task: tuple[str, int]) -> tuple[int, list[tuple[int, list, float, list]], int]:
    """Render one image, write its JPEG and return its annotations (worker entry point)."""
    from PIL import Image

    split, index = task
    plan: DatasetPlan = _WORKER["plan"]
    image_plan = plan.split(split)[index]
    rendered = render_image(image_plan, plan.categories, plan.config)
    path = os.path.join(_WORKER["out_dir"], image_plan.relative_path)
    # 4:4:4 chroma: the default 4:2:0 subsampling blurs the colour patterns of small objects.
    # Not fsync-ed one by one: the annotation files, written durably last, complete the set.
    with atomic_write(path, "wb", what="image", fsync=False) as f:
        Image.fromarray(rendered.image).save(
            f, format="JPEG", quality=plan.config.jpeg_quality, subsampling=0
        )
    anns = []
    for cat_id, visible in zip(rendered.category_ids, rendered.visible_masks):
        polygons = mask_to_polygons(visible)
        area, bbox = _annotate(polygons, plan.config.image_size)
        anns.append((cat_id, polygons, area, bbox))
    return image_plan.image_id, anns, rendered.dropped


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see :mod:`loce.fileio`), compact."""
    atomic_write_json(path, data, what="annotation file", indent=None, separators=(",", ":"))


_OUTPUTS = ("train", "val", "annotations", "summary.json")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise LoceError(f"output {out_dir}: exists and is not a directory; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise LoceError(
                f"output directory {out_dir} is not empty; choose an empty or new directory, "
                "or pass --overwrite to replace a dataset written there before"
            )
        # Only our own outputs are removed; anything else in the folder is left alone.
        for name in _OUTPUTS:
            target = out_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    for split in SPLITS:
        ensure_directory(out_dir / split, what="dataset folder")
    ensure_directory(out_dir / "annotations", what="dataset folder")


def _lvis_json(
    plan: DatasetPlan,
    split: str,
    annotations: dict[int, list[tuple[int, list, float, list]]],
    train_stats: dict[int, tuple[int, int]],
    first_ann_id: int = 1,
) -> dict[str, Any]:
    cfg = plan.config
    images = []
    anns = []
    for image_plan in plan.split(split):
        url = URL_PREFIX + image_plan.relative_path
        images.append(
            {
                "id": image_plan.image_id,
                "width": cfg.image_size,
                "height": cfg.image_size,
                "coco_url": url,
                "flickr_url": url,
                "license": 1,
                "neg_category_ids": list(image_plan.neg_category_ids),
                "not_exhaustive_category_ids": [],
            }
        )
        for cat_id, polygons, area, bbox in annotations[image_plan.image_id]:
            anns.append(
                {
                    "id": first_ann_id + len(anns),
                    "image_id": image_plan.image_id,
                    "category_id": cat_id,
                    "bbox": bbox,
                    "area": area,
                    "segmentation": polygons,
                    "iscrowd": 0,
                }
            )
    categories = []
    for cat in plan.categories:
        image_count, instance_count = train_stats[cat.id]
        frequency = _frequency_of(image_count, plan.rare_max, plan.common_max)
        categories.append(cat.lvis_dict(image_count, instance_count, frequency))
    return {
        "info": {
            "description": f"loce synthetic long-tailed dataset ({split} split)",
            "version": "1.0",
            "year": 2021,
            "contributor": "loce",
            "url": "",
            "date_created": "",
        },
        "licenses": [
            {
                "id": 1,
                "name": "CC0 1.0 (synthetic; backgrounds from scikit-image's public-domain/CC0 data)",
                "url": "https://creativecommons.org/publicdomain/zero/1.0/",
            }
        ],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }


def _split_stats(data: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """``category id -> (image count, instance count)`` of an LVIS dict."""
    images: dict[int, set[int]] = {}
    instances: dict[int, int] = {}
    for ann in data["annotations"]:
        images.setdefault(ann["category_id"], set()).add(ann["image_id"])
        instances[ann["category_id"]] = instances.get(ann["category_id"], 0) + 1
    return {c: (len(images[c]), instances[c]) for c in images}


def class_frequency_summary(
    train: dict[str, Any], val: dict[str, Any] | None, rare_max: int, common_max: int
) -> dict[str, Any]:
    """Per-class image and instance counts, r/c/f groups and thresholds of a dataset.

    Args:
        train: the training LVIS dict (its annotations define the counts and groups).
        val: the validation LVIS dict, or ``None``.
        rare_max: largest training image count of a rare class.
        common_max: largest training image count of a common class.

    Returns:
        ``{"thresholds": {...}, "groups": {"r": n, "c": n, "f": n}, "splits": {...},
        "classes": [{"id", "name", "frequency", "train_images", "train_instances",
        "val_images", "val_instances"}, ...]}`` with classes sorted by training images,
        most frequent first.
    """
    train_stats = _split_stats(train)
    val_stats = _split_stats(val) if val is not None else {}
    classes = []
    for cat in train["categories"]:
        n_img, n_inst = train_stats.get(cat["id"], (0, 0))
        v_img, v_inst = val_stats.get(cat["id"], (0, 0))
        classes.append(
            {
                "id": cat["id"],
                "name": cat["name"],
                "frequency": _frequency_of(n_img, rare_max, common_max),
                "train_images": n_img,
                "train_instances": n_inst,
                "val_images": v_img,
                "val_instances": v_inst,
            }
        )
    classes.sort(key=lambda c: (-c["train_images"], c["id"]))
    groups = {g: sum(c["frequency"] == g for c in classes) for g in "rcf"}
    splits = {"train": {"images": len(train["images"]), "annotations": len(train["annotations"])}}
    if val is not None:
        splits["val"] = {"images": len(val["images"]), "annotations": len(val["annotations"])}
    return {
        "thresholds": {
            "rare": f"1-{rare_max} training images",
            "common": f"{rare_max + 1}-{common_max} training images",
            "frequent": f"> {common_max} training images",
            "rare_max_images": rare_max,
            "common_max_images": common_max,
        },
        "groups": groups,
        "splits": splits,
        "classes": classes,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The class-frequency table of :func:`class_frequency_summary` as text."""
    th = summary["thresholds"]
    classes = summary["classes"]
    width = max([len("class")] + [len(c["name"]) for c in classes])
    lines = [
        f"{'id':>3}  {'class':<{width}}  freq  {'train img':>9}  {'train inst':>10}  "
        f"{'val img':>7}  {'val inst':>8}"
    ]
    for c in classes:
        lines.append(
            f"{c['id']:>3}  {c['name']:<{width}}  {c['frequency']:^4}  {c['train_images']:>9}  "
            f"{c['train_instances']:>10}  {c['val_images']:>7}  {c['val_instances']:>8}"
        )
    g = summary["groups"]
    n = max(len(classes), 1)
    lines.append(
        f"groups: r={g['r']} ({100 * g['r'] / n:.0f}%)  c={g['c']} ({100 * g['c'] / n:.0f}%)  "
        f"f={g['f']} ({100 * g['f'] / n:.0f}%)   thresholds: r {th['rare']}, c {th['common']}, "
        f"f {th['frequent']}"
    )
    parts = [
        f"{name}: {s['images']} images, {s['annotations']} instances"
        for name, s in summary["splits"].items()
    ]
    lines.append("   ".join(parts))
    return "\n".join(lines)


def _default_workers(n_images: int) -> int:
    if n_images < 150:  # start-up of worker processes costs more than it saves
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def _render_images(
    plan: DatasetPlan, out: Path, workers: int | None, progress: bool
) -> tuple[dict[int, list[tuple[int, list, float, list]]], int]:
    """Render and save every image of ``plan`` under ``out`` (see :func:`generate`).

    Returns:
        ``(annotations, dropped)``: the annotations of each image by image id, and the number of
        planned instances that could not be placed.
    """
    tasks = [(split, i) for split in SPLITS for i in range(len(plan.split(split)))]
    n_workers = workers if workers is not None else _default_workers(len(tasks))
    results: dict[int, list[tuple[int, list, float, list]]] = {}
    dropped = 0
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress)
    try:
        if n_workers == 1:
            _init_worker(plan, str(out))
            outputs: Iterable = map(_render_and_save, tasks)
            pool = None
        else:
            import multiprocessing

            # "spawn": the parent may hold threads (torch, tests) that fork would copy mid-flight.
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(n_workers, initializer=_init_worker, initargs=(plan, str(out)))
            outputs = pool.imap(_render_and_save, tasks, chunksize=16)
        try:
            for image_id, anns, n_dropped in outputs:
                results[image_id] = anns
                dropped += n_dropped
                bar.update()
        except BaseException:
            if pool is not None:  # interrupted or failed: stop the workers now
                pool.terminate()
                pool.join()
            raise
        if pool is not None:
            pool.close()
            pool.join()
    except OSError as err:
        raise LoceError(f"output directory {out}: cannot write images ({err})") from err
    finally:
        bar.close()
        _WORKER.clear()
    return results, dropped


def generate(
    out_dir: str | os.PathLike[str],
    config: SynthConfig,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    annotation_format: str = "lvis",
    boxes_only: bool = False,
) -> dict[str, Any]:
    """Render the dataset to ``out_dir`` and return its summary.

    Args:
        out_dir: output folder (created); must be empty unless ``overwrite``.
        config: dataset settings.
        workers: rendering processes; ``None`` picks ``min(cpu count, 4)`` (1 for small
            datasets); 1 renders in this process. The output does not depend on it.
        overwrite: replace ``train/``, ``val/``, ``annotations/`` and ``summary.json`` of a
            previous run in a non-empty ``out_dir`` (other files are left alone).
        progress: show a progress bar (tqdm) on stderr.
        annotation_format: "lvis" (LVIS v1 files) or "coco" (COCO instance files, see
            :mod:`loce.data.synthetic.coco`).
        boxes_only: with "coco", files without segmentations.

    Returns:
        The summary written to ``out_dir/summary.json``: :func:`class_frequency_summary` plus
        ``config``, ``head_class_images`` and ``dropped_instances`` (planned instances that
        could not be placed; 0 in practice).

    Raises:
        LoceError: bad settings, a non-empty ``out_dir`` without ``overwrite``, or an output
            that cannot be written.
    """
    if annotation_format not in ("lvis", "coco"):
        raise LoceError(f"annotation format {annotation_format!r}: expected 'lvis' or 'coco'")
    if boxes_only and annotation_format != "coco":
        raise LoceError("boxes only is a COCO-format option: use it with the 'coco' format")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise LoceError(f"workers={workers!r}: expected a positive integer")
    plan = plan_dataset(config)
    out = Path(out_dir)
    try:
        _prepare_out_dir(out, overwrite)
    except OSError as err:
        raise LoceError(f"output directory {out}: cannot be prepared ({err})") from err

    results, dropped = _render_images(plan, out, workers, progress)

    # Training statistics first: the val file's categories carry them, as LVIS's do.
    empty_stats = {c.id: (0, 0) for c in plan.categories}
    train = _lvis_json(plan, "train", results, empty_stats)
    train_stats = {**empty_stats, **_split_stats(train)}
    train = _lvis_json(plan, "train", results, train_stats)
    # Annotation ids are unique across the two files, as in LVIS.
    val = _lvis_json(plan, "val", results, train_stats, len(train["annotations"]) + 1)
    summary = class_frequency_summary(train, val, plan.rare_max, plan.common_max)
    summary = {
        "config": dataclasses.asdict(config),
        "head_class_images": round(plan.head_images, 2),
        "dropped_instances": dropped,
        **summary,
    }
    if annotation_format == "coco":
        from loce.data.synthetic.coco import to_coco

        last_id = max(im["id"] for im in train["images"] + val["images"])
        train = to_coco(train, "train", out, boxes_only=boxes_only, empty_image_id=last_id + 1)
        val = to_coco(val, "val", out, boxes_only=boxes_only, empty_image_id=last_id + 2)
    try:
        _write_json(out / "annotations" / "train.json", train)
        _write_json(out / "annotations" / "val.json", val)
        _write_json(out / "summary.json", summary)
    except OSError as err:
        raise LoceError(f"output directory {out}: cannot write annotations ({err})") from err
    return summary
