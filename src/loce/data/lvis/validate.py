"""Loading and checking LVIS/COCO annotation files (no torch needed).

:func:`validate_lvis` checks a whole file in time linear in its size and raises one error that
lists the first few problems; the same pass pulls out the columns that
:class:`~loce.data.lvis.index.LVISIndex` is built from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

from loce.data.lvis.columns import (
    _MISSING,
    _bbox_column,
    _element_rows,
    _int_column,
    _json_type,
    _lookup,
    _Problems,
    _report_duplicates,
    _segmentation_columns,
    _show,
)
from loce.errors import DataError
from loce.memory import paused_gc

_FREQUENCIES = ("r", "c", "f")

Format = Literal["lvis_v1", "lvis_v0.5", "coco"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _source_name(path_or_dict: Any) -> str:
    if isinstance(path_or_dict, Mapping):
        return "<annotation dict>"
    return os.fspath(path_or_dict)


def load_lvis_json(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Read an LVIS/COCO annotation file.

    Args:
        path_or_dict: a path to a JSON file, or an already-parsed annotation dict (returned as
            is, so callers can accept both).

    Returns:
        The parsed JSON object.

    Raises:
        DataError: the file does not exist, cannot be read, is not valid JSON, or its top level
            is not a JSON object.
    """
    if isinstance(path_or_dict, Mapping):
        return dict(path_or_dict)
    path = os.fspath(path_or_dict)
    try:
        with open(path, "rb") as f:
            text = f.read()
        with paused_gc():
            # msgspec reads standard JSON into the same objects twice as fast; anything it
            # declines (NaN tokens, integers beyond 64 bits, bad syntax) is read again by
            # the standard parser, whose values and messages the checks expect.
            try:
                data = msgspec.json.decode(text)
            except msgspec.DecodeError:
                data = json.loads(text)
        del text
    except FileNotFoundError:
        raise DataError(
            f"{path}: annotation file not found. Fix: check the path (it is resolved relative "
            f"to the current directory {os.getcwd()})."
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            "Fix: the file may be truncated or not an annotation file; re-download or "
            "regenerate it."
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not a UTF-8 JSON file ({e.reason} at byte {e.start}). Fix: pass the "
            "annotation .json file, not an archive or image."
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read annotation file: {e.strerror or e}.") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: top level must be a JSON object with 'images', 'annotations' and "
            f"'categories'; found a JSON {_json_type(data)}. Fix: pass an LVIS or COCO "
            "annotation file (a results file is a list; use it with evaluation instead)."
        )
    return data


def validate_lvis(
    data: Mapping[str, Any],
    source: str = "<annotation dict>",
    *,
    require_federated: bool = False,
    require_file_names: bool = True,
) -> None:
    """Check an LVIS/COCO annotation dict and raise one error listing what is wrong.

    Checks: the top-level lists; every image, annotation and category is an object with its
    required keys and types (ids are integers, ``width``/``height`` positive integers, each
    image has ``file_name`` or ``coco_url``, ``bbox`` is 4 finite numbers with width and height
    ``>= 0``, ``segmentation`` is a list of polygons with an even number ``>= 6`` of finite
    coordinates or an RLE dict whose ``size`` is the image's ``[height, width]`` and whose
    ``counts`` decode to run lengths covering exactly that many pixels, ``frequency`` is ``'r'``, ``'c'`` or ``'f'``); no duplicate ids; every annotation's
    ``image_id`` and ``category_id`` and every id in ``neg_category_ids`` /
    ``not_exhaustive_category_ids`` exist. The work is linear in the file size.

    Args:
        data: the parsed annotation file.
        source: the file name to put in messages.
        require_federated: also require the LVIS evaluation fields: ``neg_category_ids`` and
            ``not_exhaustive_category_ids`` on every image and ``frequency`` on every category.
        require_file_names: require an image file name (``file_name`` or ``coco_url``) on every
            image; evaluation, which opens no image, passes False.

    Raises:
        DataError: naming ``source``, the first few problems (key path or index, what was
            found, how to fix it) and how many there are in all.
    """
    with paused_gc():
        _check_and_extract(data, source, require_federated=require_federated,
                           require_file_names=require_file_names)


@dataclass
class _Extracted:
    """Columns pulled out of a validated annotation dict (internal)."""

    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    file_names: list[str]
    cat_ids: np.ndarray  # sorted
    cat_names: list[str]
    cat_frequencies: list[str | None]
    ann_ids: np.ndarray
    ann_image_rows: np.ndarray
    ann_labels: np.ndarray
    ann_bbox: np.ndarray
    ann_iscrowd: np.ndarray
    seg_kind: np.ndarray
    ann_poly_offsets: np.ndarray
    poly_offsets: np.ndarray
    coords: np.ndarray
    rles: dict[int, dict[str, Any]]
    format: Format


def _check_and_extract(
    data: Mapping[str, Any],
    source: str,
    *,
    require_federated: bool = False,
    require_file_names: bool = True,
) -> _Extracted:
    problems = _Problems(source)
    _check_top_level(data, problems)
    cat_ids, cat_names, freqs = _check_categories(
        data["categories"], problems, require_federated=require_federated
    )
    image_ids, heights, widths, file_names, uses_url = _check_images(
        data["images"],
        problems,
        cat_ids,
        require_federated=require_federated,
        require_file_names=require_file_names,
    )
    ann_columns = _check_annotations(
        data.get("annotations", []), problems, image_ids, heights, widths, cat_ids
    )
    problems.raise_if_any()
    has_freq = any(f is not None for f in freqs)
    fmt = "lvis_v1" if uses_url else ("lvis_v0.5" if has_freq else "coco")
    return _Extracted(
        image_ids=image_ids,
        heights=heights,
        widths=widths,
        file_names=file_names,
        cat_ids=cat_ids,
        cat_names=cat_names,
        cat_frequencies=freqs,
        format=fmt,
        **ann_columns,
    )


def _check_top_level(data: Any, problems: _Problems) -> None:
    """An object with list-valued 'images' and 'categories' (and 'annotations', if present)."""
    if not isinstance(data, Mapping):
        problems.add(
            f"top level: expected a JSON object with 'images', 'annotations' and 'categories', "
            f"found a {_json_type(data)}. Fix: pass an LVIS or COCO annotation file."
        )
        problems.raise_if_any()
    for key in ("images", "categories", "annotations"):
        if key not in data:
            if key == "annotations":
                continue  # image-info files (e.g. LVIS test) have no annotations
            problems.add(
                f"top level: key '{key}' is missing (found keys {sorted(data)[:8]}). Fix: an "
                f"LVIS/COCO annotation file has top-level 'images', 'annotations', 'categories'."
            )
        elif not isinstance(data[key], list):
            problems.add(
                f"'{key}': expected a list, found a {_json_type(data[key])}. Fix: '{key}' must "
                "be a JSON list of objects."
            )
    problems.raise_if_any()


# ---- categories ----------------------------------------------------------------------------


def _check_categories(
    raw: list[Any], problems: _Problems, *, require_federated: bool
) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Category ids (sorted), and the names and frequencies in that order."""
    cats, cat_skip = _element_rows(raw, "categories", problems)
    cat_where = lambda i: f"categories[{i}]"  # noqa: E731
    cat_ids, cat_ok = _int_column(
        cats, "id", cat_where, problems, cat_skip, fix="give every category an integer 'id'."
    )
    _report_duplicates(cat_ids, cat_ok, "categories", problems)
    names: list[str] = []
    freqs: list[str | None] = []
    for i, c in enumerate(cats):
        name = c.get("name", _MISSING)
        if type(name) is not str and i not in cat_skip:
            problems.add(
                f"{cat_where(i)} (id {_show(c.get('id'))}): 'name' "
                + ("is missing" if name is _MISSING else f"must be a string, found {_show(name)}")
                + ". Fix: give every category a string 'name'."
            )
        names.append(name if type(name) is str else "")
        fq = c.get("frequency", _MISSING)
        if fq is _MISSING:
            if require_federated and i not in cat_skip:
                problems.add(
                    f"{cat_where(i)} (id {_show(c.get('id'))}): 'frequency' is missing. Fix: "
                    "LVIS evaluation needs 'frequency' ('r', 'c' or 'f') on every category."
                )
            freqs.append(None)
        elif fq not in _FREQUENCIES:
            problems.add(
                f"{cat_where(i)} (id {_show(c.get('id'))}): 'frequency' must be 'r', 'c' or 'f',"
                f" found {_show(fq)}. Fix: use LVIS's rare/common/frequent codes."
            )
            freqs.append(None)
        else:
            freqs.append(fq)
    cat_order = np.argsort(cat_ids, kind="stable")
    return cat_ids[cat_order], [names[i] for i in cat_order], [freqs[i] for i in cat_order]


# ---- images --------------------------------------------------------------------------------


def _check_images(
    raw: list[Any],
    problems: _Problems,
    sorted_cat_ids: np.ndarray,
    *,
    require_federated: bool,
    require_file_names: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], bool]:
    """Image ids, heights, widths and file names, and whether the names come from 'coco_url'."""
    imgs, img_skip = _element_rows(raw, "images", problems)
    img_where = lambda i: f"images[{i}]"  # noqa: E731
    image_ids, img_ok = _int_column(
        imgs, "id", img_where, problems, img_skip, fix="give every image an integer 'id'."
    )
    _report_duplicates(image_ids, img_ok, "images", problems)

    def img_where_id(i: int) -> str:
        return f"images[{i}] (id {image_ids[i]})" if img_ok[i] else f"images[{i}]"

    size_fix = "'width' and 'height' are the image size in pixels (positive integers)."
    heights, _ = _int_column(
        imgs, "height", img_where_id, problems, img_skip, fix=size_fix, positive=True
    )
    widths, _ = _int_column(
        imgs, "width", img_where_id, problems, img_skip, fix=size_fix, positive=True
    )
    file_names, uses_url = _image_file_names(
        imgs, img_where_id, problems, img_skip, require_file_names=require_file_names
    )
    _check_federated_ids(
        imgs, img_where_id, problems, img_skip, sorted_cat_ids, require_federated=require_federated
    )
    return image_ids, heights, widths, file_names, uses_url


def _image_file_names(
    imgs: list[dict[str, Any]],
    where: Any,
    problems: _Problems,
    skip: set[int],
    *,
    require_file_names: bool,
) -> tuple[list[str], bool]:
    """Each image's path under the image root ('file_name', else from 'coco_url')."""
    file_names: list[str] = []
    uses_url = False
    for i, im in enumerate(imgs):
        fn = im.get("file_name", _MISSING)
        if type(fn) is str and fn:
            file_names.append(fn)
            continue
        url = im.get("coco_url", _MISSING)
        if type(url) is str and url:
            # LVIS v1: ".../train2017/000000123456.jpg" -> "train2017/000000123456.jpg"
            file_names.append("/".join(url.rstrip("/").rsplit("/", 2)[-2:]))
            uses_url = True
            continue
        file_names.append("")
        if i not in skip and require_file_names:
            problems.add(
                f"{where(i)}: no image file name: 'file_name' is "
                f"{'missing' if fn is _MISSING else _show(fn)} and 'coco_url' is "
                f"{'missing' if url is _MISSING else _show(url)}. Fix: give each image a "
                "'file_name' (COCO, LVIS v0.5) or a 'coco_url' (LVIS v1)."
            )
    return file_names, uses_url


def _check_federated_ids(
    imgs: list[dict[str, Any]],
    where: Any,
    problems: _Problems,
    skip: set[int],
    sorted_cat_ids: np.ndarray,
    *,
    require_federated: bool,
) -> None:
    """'neg_category_ids' and 'not_exhaustive_category_ids': lists of known category ids."""
    fed_keys = ("neg_category_ids", "not_exhaustive_category_ids")
    fed_vals: list[int] = []
    fed_rows: list[int] = []
    fed_key_of: list[int] = []
    for i, im in enumerate(imgs):
        for k, key in enumerate(fed_keys):
            v = im.get(key, _MISSING)
            if v is _MISSING:
                if require_federated and i not in skip:
                    problems.add(
                        f"{where(i)}: '{key}' is missing. Fix: LVIS evaluation needs "
                        f"'{fed_keys[0]}' and '{fed_keys[1]}' (lists of category ids) on every "
                        "image."
                    )
                continue
            if type(v) is not list or not all(type(x) is int for x in v):
                problems.add(
                    f"{where(i)}: '{key}' must be a list of integer category ids, found "
                    f"{_show(v)}. Fix: write a list such as [3, 17]."
                )
                continue
            fed_vals.extend(v)
            fed_rows.extend([i] * len(v))
            fed_key_of.extend([k] * len(v))
    if fed_vals:
        try:
            _, found = _lookup(sorted_cat_ids, np.asarray(fed_vals, np.int64))
        except OverflowError:  # an id beyond 64 bits is no category's
            fits = np.array([_INT64_MIN <= v <= _INT64_MAX for v in fed_vals])
            values = np.array([v if ok else 0 for v, ok in zip(fed_vals, fits)], np.int64)
            found = _lookup(sorted_cat_ids, values)[1] & fits
        bad = np.flatnonzero(~found)
        problems.add_rows(
            bad,
            lambda j: (
                f"{where(fed_rows[j])}: '{fed_keys[fed_key_of[j]]}' lists category "
                f"id {fed_vals[j]}, which is not in 'categories'. Fix: remove it or add the "
                "category."
            ),
        )


# ---- annotations ---------------------------------------------------------------------------


def _check_annotations(
    raw: list[Any],
    problems: _Problems,
    image_ids: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    sorted_cat_ids: np.ndarray,
) -> dict[str, Any]:
    """The annotation columns of :class:`_Extracted`."""
    anns, ann_skip = _element_rows(raw, "annotations", problems)
    ann_ids, ann_ok = _int_column(
        anns,
        "id",
        lambda i: f"annotations[{i}]",
        problems,
        ann_skip,
        fix="give every annotation a unique integer 'id'.",
    )
    _report_duplicates(ann_ids, ann_ok, "annotations", problems)

    def ann_where(i: int) -> str:
        return f"annotations[{i}] (id {ann_ids[i]})" if ann_ok[i] else f"annotations[{i}]"

    ann_image_rows, ann_labels = _annotation_links(
        anns, ann_where, problems, ann_skip, image_ids, sorted_cat_ids
    )
    ann_bbox = _bbox_column(anns, ann_where, problems, ann_skip)
    ann_iscrowd = _iscrowd_column(anns, ann_where, problems)
    seg = _segmentation_columns(anns, ann_where, problems, ann_image_rows, heights, widths)
    return {
        "ann_ids": ann_ids,
        "ann_image_rows": ann_image_rows,
        "ann_labels": ann_labels,
        "ann_bbox": ann_bbox,
        "ann_iscrowd": ann_iscrowd,
        **seg,
    }


def _annotation_links(
    anns: list[dict[str, Any]],
    where: Any,
    problems: _Problems,
    skip: set[int],
    image_ids: np.ndarray,
    sorted_cat_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each annotation's image row (-1 if unknown) and label (0 if unknown)."""
    ann_img, ann_img_ok = _int_column(
        anns,
        "image_id",
        where,
        problems,
        skip,
        fix="give every annotation the integer 'image_id' of its image.",
    )
    ann_cat, ann_cat_ok = _int_column(
        anns,
        "category_id",
        where,
        problems,
        skip,
        fix="give every annotation the integer 'category_id' of its category.",
    )
    img_order = np.argsort(image_ids, kind="stable")
    pos, found = _lookup(image_ids[img_order], ann_img)
    bad = np.flatnonzero(ann_img_ok & ~found)
    problems.add_rows(
        bad,
        lambda i: (
            f"{where(i)}: image_id {ann_img[i]} is not in 'images'. Fix: remove the "
            "annotation or add its image."
        ),
    )
    ann_image_rows = np.full(len(anns), -1, np.int64)
    ann_image_rows[found] = img_order[pos[found]]
    cpos, cfound = _lookup(sorted_cat_ids, ann_cat)
    bad = np.flatnonzero(ann_cat_ok & ~cfound)
    problems.add_rows(
        bad,
        lambda i: (
            f"{where(i)}: category_id {ann_cat[i]} is not in 'categories'. Fix: "
            "remove the annotation or add the category."
        ),
    )
    return ann_image_rows, np.where(cfound, cpos + 1, 0).astype(np.int64)


def _iscrowd_column(anns: list[dict[str, Any]], where: Any, problems: _Problems) -> np.ndarray:
    """COCO's crowd flag, 0 (the default) or 1."""
    n_ann = len(anns)
    crowd_vals = [a.get("iscrowd", 0) for a in anns]
    crowd_arr = None
    if set(map(type, crowd_vals)) <= {int, bool}:
        try:
            crowd_arr = np.array(crowd_vals, dtype=np.int64).reshape(n_ann)
        except OverflowError:  # a value beyond 64 bits: the exact route below names it
            pass
    if crowd_arr is not None:
        bad = np.flatnonzero((crowd_arr != 0) & (crowd_arr != 1))
    else:
        bad = np.asarray(
            [i for i, v in enumerate(crowd_vals) if v not in (0, 1) or type(v) not in (int, bool)],
            dtype=np.int64,
        )
    problems.add_rows(
        bad,
        lambda i: (
            f"{where(i)}: 'iscrowd' must be 0 or 1, found {_show(crowd_vals[i])}. "
            "Fix: use 0 for single objects and 1 for crowd regions (COCO convention)."
        ),
    )
    return np.fromiter((v is True or v == 1 for v in crowd_vals), bool, n_ann)
