"""Reading checked columns out of annotation entries, reporting every malformed field.

Each reader turns one field of every image, annotation or category into a numpy column in one
pass (a fast path when the whole column is well-typed, a slow one that names the offending rows
otherwise) and adds what is wrong to a :class:`_Problems` collector, so one error can list the
first few problems of a file and count the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from loce.data.rle import rle_problem
from loce.errors import DataError

_MISSING = object()
_MAX_LISTED = 5  # problems spelled out in one error message; the rest are counted
# Polygons are converted to numpy in blocks of this many polygons, which bounds the temporary
# Python list that numpy needs for strict type inference.
_POLY_BLOCK = 200_000


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(v: Any, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Problems:
    """Collects problems; keeps the first few spelled out and counts the rest."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.listed: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.listed) < _MAX_LISTED:
            self.listed.append(text)

    def add_rows(self, rows: Sequence[int] | np.ndarray, describe: Any) -> None:
        """Add one problem per row; only the first few are described (``describe(row)``)."""
        n = len(rows)
        if n == 0:
            return
        room = max(0, _MAX_LISTED - len(self.listed))
        for r in list(rows[:room]):
            self.listed.append(describe(int(r)))
        self.count += n

    def raise_if_any(self) -> None:
        if not self.count:
            return
        head = f"{self.source}: invalid annotation file: {self.count} problem"
        head += "s" if self.count != 1 else ""
        lines = [head + (":" if self.count == 1 else f" (first {len(self.listed)} shown):")]
        lines += [f"  - {t}" for t in self.listed]
        if self.count > len(self.listed):
            lines.append(f"  ... and {self.count - len(self.listed)} more of the same kinds.")
        raise DataError("\n".join(lines))


def _element_rows(
    items: list[Any], section: str, problems: _Problems
) -> tuple[list[dict[str, Any]], set[int]]:
    """Replace non-object entries by ``{}`` (after reporting them) so columns can be read."""
    bad = [i for i, it in enumerate(items) if type(it) is not dict]
    if not bad:
        return items, set()
    problems.add_rows(
        bad,
        lambda i: (
            f"{section}[{i}]: expected a JSON object, found a {_json_type(items[i])}. "
            f"Fix: every entry of '{section}' must be an object."
        ),
    )
    return [it if type(it) is dict else {} for it in items], set(bad)


def _int_column(
    items: list[dict[str, Any]],
    key: str,
    where: Any,
    problems: _Problems,
    skip: set[int],
    *,
    fix: str,
    positive: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a required integer field. Returns (values with -1 where invalid, valid mask)."""
    vals = [it.get(key, _MISSING) for it in items]
    n = len(vals)
    out: np.ndarray | None = None
    if set(map(type, vals)) <= {int}:  # fast path: every value is a plain int (not bool)
        try:
            out = np.array(vals, dtype=np.int64)
        except OverflowError:
            out = None
    if out is not None:
        ok = out > 0 if positive else np.ones(n, bool)
    else:
        lo, hi = (1 if positive else -(2**63)), 2**63
        ok = np.fromiter((type(v) is int and lo <= v < hi for v in vals), bool, n)
        out = np.fromiter((v if t else -1 for v, t in zip(vals, ok, strict=True)), np.int64, n)
    out[~ok] = -1
    bad = np.flatnonzero(~ok)
    if skip:
        bad = np.asarray([i for i in bad.tolist() if i not in skip], dtype=np.int64)

    def describe(i: int) -> str:
        v = vals[i]
        if v is _MISSING:
            return f"{where(i)}: '{key}' is missing. Fix: {fix}"
        kind = "a positive integer" if positive else "an integer"
        return f"{where(i)}: '{key}' must be {kind}, found {_show(v)}. Fix: {fix}"

    problems.add_rows(bad, describe)
    return out, ok


def _report_duplicates(
    ids: np.ndarray, valid: np.ndarray, section: str, problems: _Problems
) -> None:
    rows = np.flatnonzero(valid)
    if rows.size < 2:
        return
    vals = ids[rows]
    order = np.argsort(vals, kind="stable")
    sv = vals[order]
    dup = np.flatnonzero(sv[1:] == sv[:-1]) + 1
    if dup.size == 0:
        return
    first = rows[order[dup - 1]]
    second = rows[order[dup]]
    problems.add_rows(
        np.arange(dup.size),
        lambda k: (
            f"{section}[{first[k]}] and {section}[{second[k]}] have the same id "
            f"{int(ids[second[k]])}. Fix: ids must be unique within '{section}'; renumber or "
            "remove the duplicate."
        ),
    )


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``values`` in ``sorted_ids`` and whether each was found."""
    if sorted_ids.size == 0:
        return np.zeros(values.shape, np.int64), np.zeros(values.shape, bool)
    pos = np.searchsorted(sorted_ids, values)
    pos_c = np.minimum(pos, sorted_ids.size - 1)
    return pos_c, sorted_ids[pos_c] == values


def _bbox_column(
    anns: list[dict[str, Any]], where: Any, problems: _Problems, skip: set[int]
) -> np.ndarray:
    fix = "'bbox' is [x, y, width, height] in pixels: 4 finite numbers, width and height >= 0."
    n = len(anns)
    boxes = [a.get("bbox", _MISSING) for a in anns]
    arr: np.ndarray | None = None
    if n:
        try:
            arr = np.array(boxes)  # fast path: numpy infers int/float only if all are numbers
        except (ValueError, TypeError):
            arr = None
        if arr is not None and not (
            arr.ndim == 2 and arr.shape[1] == 4 and arr.dtype.kind in "iuf"
        ):
            arr = None
    if arr is None:
        # Slow path, only for files with a problem: find the offending rows one by one.
        good = [
            type(b) is list and len(b) == 4 and all(type(x) in (int, float) for x in b)
            for b in boxes
        ]
        bad = [i for i, g in enumerate(good) if not g and i not in skip]

        def describe(i: int) -> str:
            b = boxes[i]
            if b is _MISSING:
                return f"{where(i)}: 'bbox' is missing. Fix: {fix}"
            return f"{where(i)}: 'bbox' must be 4 numbers, found {_show(b)}. Fix: {fix}"

        problems.add_rows(bad, describe)
        arr = np.array([b if g else [0.0, 0.0, 0.0, 0.0] for b, g in zip(boxes, good, strict=True)])
    arr = arr.astype(np.float64, copy=False).reshape(n, 4)
    finite = np.isfinite(arr).all(axis=1)
    bad = np.flatnonzero(~finite)
    problems.add_rows(
        bad, lambda i: f"{where(i)}: 'bbox' has a non-finite value {_show(boxes[i])}. Fix: {fix}"
    )
    neg = np.flatnonzero(finite & ((arr[:, 2] < 0) | (arr[:, 3] < 0)))
    problems.add_rows(
        neg,
        lambda i: (
            f"{where(i)}: 'bbox' has a negative width or height {_show(boxes[i])}. Fix: {fix}"
        ),
    )
    return arr


_SEGMENTATION_FIX = (
    "'segmentation' is a list of polygons [[x1, y1, x2, y2, ...], ...] (each with an even "
    "number >= 6 of finite coordinates) or an RLE {'size': [height, width], 'counts': ...}."
)


def _segmentation_columns(
    anns: list[dict[str, Any]],
    where: Any,
    problems: _Problems,
    image_rows: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
) -> dict[str, Any]:
    """Pack polygons into flat arrays; keep RLE dicts aside; report malformed entries."""
    fix = _SEGMENTATION_FIX
    n = len(anns)
    seg_kind = np.zeros(n, np.int8)  # 0 missing, 1 polygons, 2 RLE
    n_polys = np.zeros(n, np.int64)
    polys: list[Any] = []
    rles: dict[int, dict[str, Any]] = {}
    bad_type: list[int] = []
    for i, a in enumerate(anns):
        s = a.get("segmentation", _MISSING)
        t = type(s)
        if t is list:
            seg_kind[i] = 1
            n_polys[i] = len(s)
            polys.extend(s)
        elif t is dict:
            seg_kind[i] = 2
            rles[i] = s
        elif s is not _MISSING:
            bad_type.append(i)
    problems.add_rows(
        bad_type,
        lambda i: (
            f"{where(i)}: 'segmentation' must be a list of polygons or an RLE object, "
            f"found {_show(anns[i]['segmentation'])}. Fix: {fix}"
        ),
    )
    ann_poly_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(n_polys, out=ann_poly_offsets[1:])
    poly_offsets, coords = _polygon_coordinates(anns, where, problems, polys, ann_poly_offsets)
    _check_rles(rles, where, problems, image_rows, heights, widths)
    return {
        "seg_kind": seg_kind,
        "ann_poly_offsets": ann_poly_offsets,
        "poly_offsets": poly_offsets,
        "coords": coords,
        "rles": rles,
    }


def _polygon_coordinates(
    anns: list[dict[str, Any]],
    where: Any,
    problems: _Problems,
    polys: list[Any],
    ann_poly_offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every polygon's coordinates in one flat float64 array, and where each polygon starts.

    A malformed polygon is reported once per annotation and packed as empty.
    """
    fix = _SEGMENTATION_FIX
    lens = np.fromiter((len(p) if type(p) is list else -1 for p in polys), np.int64, len(polys))
    bad_poly = np.flatnonzero((lens < 6) | (lens % 2 == 1))
    owner = lambda j: int(np.searchsorted(ann_poly_offsets, j, side="right") - 1)  # noqa: E731
    if bad_poly.size:
        # one problem per annotation, not per polygon
        bad_anns = np.unique(np.searchsorted(ann_poly_offsets, bad_poly, side="right") - 1)
        problems.add_rows(
            bad_anns,
            lambda i: (
                f"{where(i)}: 'segmentation' has a polygon that is not a list of an even "
                f"number >= 6 of coordinates: {_show(anns[i]['segmentation'])}. Fix: {fix}"
            ),
        )
        lens = np.where(lens < 0, 0, lens)
        for j in bad_poly:
            polys[j] = []
        lens[bad_poly] = 0
    poly_offsets = np.zeros(len(polys) + 1, np.int64)
    np.cumsum(lens, out=poly_offsets[1:])
    blocks: list[np.ndarray] = []
    for start in range(0, len(polys), _POLY_BLOCK):
        part = polys[start : start + _POLY_BLOCK]
        flat = list(chain.from_iterable(part))
        arr = np.array(flat) if flat else np.zeros(0)
        if arr.dtype.kind not in "iuf":
            # find the first few polygons with a non-number coordinate
            bad_p = [
                start + j for j, p in enumerate(part) if not all(type(x) in (int, float) for x in p)
            ]
            bad_anns = sorted({owner(j) for j in bad_p})
            problems.add_rows(
                bad_anns,
                lambda i: (
                    f"{where(i)}: 'segmentation' has a coordinate that is not a number: "
                    f"{_show(anns[i]['segmentation'])}. Fix: {fix}"
                ),
            )
            arr = np.zeros(len(flat))
        blocks.append(arr.astype(np.float64, copy=False))
    coords = np.concatenate(blocks) if blocks else np.zeros(0, np.float64)
    nonfinite = np.flatnonzero(~np.isfinite(coords))
    if nonfinite.size:
        poly_of = np.searchsorted(poly_offsets, nonfinite, side="right") - 1
        bad_anns = np.unique(np.searchsorted(ann_poly_offsets, poly_of, side="right") - 1)
        problems.add_rows(
            bad_anns,
            lambda i: f"{where(i)}: 'segmentation' has a non-finite coordinate. Fix: {fix}",
        )
    return poly_offsets, coords


def _check_rles(
    rles: dict[int, dict[str, Any]],
    where: Any,
    problems: _Problems,
    image_rows: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
) -> None:
    """RLE segmentations: well-formed, at their image's size, with counts covering it."""
    fix = _SEGMENTATION_FIX
    for i, r in rles.items():
        size, counts = r.get("size", _MISSING), r.get("counts", _MISSING)
        size_ok = type(size) is list and len(size) == 2 and all(type(x) is int for x in size)
        counts_ok = type(counts) is str or (
            type(counts) is list and all(type(x) is int for x in counts)
        )
        if not (size_ok and counts_ok):
            problems.add(
                f"{where(i)}: RLE 'segmentation' needs 'size' [height, width] (integers) and "
                f"'counts' (a string or a list of integers), found keys {sorted(r)[:4]}. "
                f"Fix: {fix}"
            )
            continue
        row = int(image_rows[i])
        if row >= 0 and size != [int(heights[row]), int(widths[row])]:
            problems.add(
                f"{where(i)}: RLE 'size' {size} differs from its image's [height, width] "
                f"[{int(heights[row])}, {int(widths[row])}]. Fix: encode the mask at the image "
                "size given in 'images'."
            )
            continue
        problem = rle_problem(counts, size[0], size[1])
        if problem is not None:
            problems.add(f"{where(i)}: {problem}. Fix: re-encode the mask with pycocotools "
                         "(mask.encode) at the image size.")
