"""A results file read straight into columns, without a Python dict per detection.

LVIS v1 val with 300 detections per image is six million detections; read with ``json.load``
a mask results file becomes six million dicts (about 1.5 GB at 20,000 images) before any
check runs. Here the file is read into one reused buffer and cut into blocks of about 32 MB
at boundaries between detections; each block is decoded in place by msgspec into typed
records that live only until their block's
columns are taken: ids, scores, boxes, mask sizes, and each mask's area measured by the
engine's RLE decoder. The checks of :mod:`loce.evaluation.results` then run on the columns,
with the same messages and indices.

The typed decode refuses what the exact route reports with a tailored message (a bool or
``null`` score, a float id, a missing key, a polygon or uncompressed mask, NaN, a top-level
object, a block that does not decode): :func:`read_results_columns` then returns None and the
caller takes the exact route (``json.load`` and :func:`~loce.evaluation.results.validate_results`),
which names the detection and the fix. A valid file never takes that route. A cut inside a
string or a nested value leaves a block that is not a JSON list of detections, so a wrong cut
can only send a file to the exact route, never misread it.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Sequence
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import BinaryIO, NamedTuple

import msgspec
import numpy as np

from loce.errors import ResultsError
from loce.evaluation.results import (
    JSON_SPACE,
    DetectionColumns,
    check_boxes,
    check_finite,
    check_known_ids,
    check_mask_sizes,
    mask_areas,
)
from loce.memory import paused_gc

_BLOCK = 1 << 25
# The end of one detection and the start of the next: "}" "," "{" with optional whitespace.
_BOUNDARY = re.compile(rb"\}\s*,\s*\{")
_READ = 1 << 20


class _Rle(msgspec.Struct, gc=False):
    size: tuple[int, int]
    counts: str


class _Box(msgspec.Struct, gc=False):
    image_id: int
    category_id: int
    score: float
    bbox: tuple[float, float, float, float] | msgspec.UnsetType = msgspec.UNSET


class _Mask(msgspec.Struct, gc=False):
    image_id: int
    category_id: int
    score: float
    segmentation: _Rle
    bbox: tuple[float, float, float, float] | msgspec.UnsetType = msgspec.UNSET


_IMAGE_ID, _CATEGORY_ID, _SCORE, _BBOX, _SEGMENTATION = map(
    attrgetter, ("image_id", "category_id", "score", "bbox", "segmentation"))  # fmt: skip
_SIZE = itemgetter("size")


class _Doubt(Exception):
    """The file needs the exact route."""


def _blocks(path: Path, block_bytes: int) -> Iterator[memoryview]:
    """The file as JSON lists of whole detections, each ``[{...},...,{...}]``, without copies.

    The file is read into one reused buffer; each block runs from one cut to the next, where a
    cut is the comma between two detections (the first boundary ``block_bytes`` or more after
    the block's start), written over with ``[`` or ``]`` for as long as its block is decoded.
    After a block, only the bytes read past its end move to the front of the buffer. A
    consumer must not keep a block (or a buffer taken from it) past the next one.
    """
    buf = bytearray(2 * block_bytes + _READ)
    with path.open("rb") as f:
        filled = _read_into(f, buf, 0)
        start = 0
        while start < filled and buf[start] in JSON_SPACE:
            start += 1
        if start >= filled or buf[start] != ord("["):
            raise _Doubt
        pos, eof = start, False
        while True:
            # Read until a boundary lies beyond pos + block_bytes, or the file ends.
            while True:
                match = None
                if pos + block_bytes < filled:
                    match = _BOUNDARY.search(buf, pos + block_bytes, filled)
                if match is not None or eof:
                    break
                if filled == len(buf):
                    if pos > 0:  # move the unread part to the front
                        buf[: filled - pos] = buf[pos:filled]
                        filled, pos = filled - pos, 0
                    else:  # one detection larger than the buffer: grow it
                        buf.extend(bytes(len(buf)))
                got = _read_into(f, buf, filled)
                eof = got == filled
                filled = got
            if match is not None:
                cut = buf.find(b",", match.start(), match.end())
            else:
                cut = filled - 1
                while cut > pos and buf[cut] in JSON_SPACE:
                    cut -= 1
                if cut <= pos or buf[cut] != ord("]"):
                    raise _Doubt
            buf[pos] = ord("[")
            saved = buf[cut]
            buf[cut] = ord("]")
            view = memoryview(buf)[pos : cut + 1]
            try:
                yield view
            finally:
                view.release()
                buf[cut] = saved
            if match is None:
                return
            pos = cut


def _read_into(f: BinaryIO, buf: bytearray, filled: int) -> int:
    """Fill ``buf`` from ``filled`` on as far as the file goes; returns the new fill level."""
    with memoryview(buf) as view:
        while filled < len(buf):
            got = f.readinto(view[filled:])
            if not got:
                break
            filled += got
    return filled


class _Decoded(NamedTuple):
    """A results file's columns, one array per block, in file order."""

    image_ids: list[np.ndarray]
    category_ids: list[np.ndarray]
    scores: list[np.ndarray]
    boxes: list[np.ndarray]  # empty unless every detection has a box
    sizes: list[np.ndarray]  # mask sizes (masks only)
    areas: list[np.ndarray]  # mask areas, up to the first mask that does not decode
    with_box: int
    count: int
    mask_error: ResultsError | None  # that mask's error, raised after the checks before it


def _decode_blocks(path: Path, source: str, masks: bool, block_bytes: int) -> _Decoded:
    """Decode the file block by block into typed records and take their columns.

    Raises:
        _Doubt: the file needs the exact route. OverflowError: an integer beyond int64 (the
            exact route reports it).
    """
    record = _Mask if masks else _Box
    decoder = msgspec.json.Decoder(list[record])
    image_ids, category_ids, scores, boxes, sizes, areas = [], [], [], [], [], []
    with_box = without_box = 0
    offset = 0
    mask_error: ResultsError | None = None
    for block in _blocks(path, block_bytes):
        try:
            dets = decoder.decode(block)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise _Doubt from None
        n = len(dets)
        image_ids.append(np.fromiter(map(_IMAGE_ID, dets), np.int64, n))
        category_ids.append(np.fromiter(map(_CATEGORY_ID, dets), np.int64, n))
        scores.append(np.fromiter(map(_SCORE, dets), np.float64, n))
        block_boxes = list(map(_BBOX, dets))
        unset = block_boxes.count(msgspec.UNSET)
        with_box += n - unset
        without_box += unset
        if with_box and without_box:
            raise _Doubt  # some detections have a box and some do not: exact route
        if not unset and n:
            flat = itertools.chain.from_iterable(block_boxes)
            boxes.append(np.fromiter(flat, np.float64, 4 * n).reshape(n, 4))
        del block_boxes
        if masks:
            with paused_gc():  # a dict per mask, the form the engine's RLE functions take
                rles = [{"size": r.size, "counts": r.counts} for r in map(_SEGMENTATION, dets)]
            flat = itertools.chain.from_iterable(map(_SIZE, rles))
            sizes.append(np.fromiter(flat, np.int64, 2 * n).reshape(n, 2))
            if mask_error is None:
                try:
                    areas.append(mask_areas(rles, source, offset=offset))
                except ResultsError as err:
                    mask_error = err  # raised after the checks that come first
            del rles
        del dets
        offset += n
    return _Decoded(image_ids, category_ids, scores, boxes, sizes, areas, with_box, offset,
                    mask_error)


def read_results_columns(
    path: str | os.PathLike[str],
    *,
    gt_image_ids: np.ndarray,
    gt_image_sizes: np.ndarray,
    gt_category_ids: np.ndarray,
    iou_types: Sequence[str],
    gt_source: str = "annotation file",
    block_bytes: int = _BLOCK,
) -> DetectionColumns | None:
    """Read and validate a results file into columns; None when it needs the exact route.

    Arguments as :func:`~loce.evaluation.results.validate_results` (``source`` is the path).

    Returns:
        :class:`~loce.evaluation.results.DetectionColumns` with ``segmentations`` None (the
        masks stay in the file, which the engine reads itself) and, for ``"segm"``,
        ``mask_areas``; or None when the file is not a plain list of detections of the
        expected types (the exact route then reports the problem).

    Raises:
        ResultsError: a detection with an unknown id, a non-finite value, a negative box
            size, a mask of the wrong size or a mask that does not decode.
    """
    path = Path(path)
    source = str(path)
    masks = "segm" in iou_types
    try:
        (image_ids, category_ids, scores, boxes, sizes, areas, with_box, offset,
         mask_error) = _decode_blocks(path, source, masks, block_bytes)  # fmt: skip
    except (_Doubt, OverflowError):
        return None
    if offset == 0:
        return None  # the exact route reports the empty list
    image_id_col = np.concatenate(image_ids)
    category_id_col = np.concatenate(category_ids)
    check_known_ids(image_id_col, gt_image_ids, "image_id", source, gt_source)
    check_known_ids(category_id_col, gt_category_ids, "category_id", source, gt_source)
    score_col = check_finite(np.concatenate(scores), "score", source)
    area_col = None
    if masks:
        check_mask_sizes(np.concatenate(sizes), image_id_col, gt_image_ids, gt_image_sizes,
                         source)  # fmt: skip
        if mask_error is not None:
            raise mask_error
        area_col = np.concatenate(areas)
    box_col = check_boxes(np.concatenate(boxes), source) if with_box else None
    del boxes
    if "bbox" in iou_types and box_col is None:
        return None  # the exact route names the detection without a box
    box_areas = None
    if box_col is not None and "bbox" not in iou_types:
        # Masks only: the box decides the object's size and nothing else.
        box_areas, box_col = box_col[:, 2] * box_col[:, 3], None
    return DetectionColumns(image_id_col, category_id_col, score_col, box_col, None, area_col,
                            box_areas)  # fmt: skip


class _Ranked(msgspec.Struct, gc=False):
    category_id: int
    score: float


def cap_results_file_per_class(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], k: int, *, block_bytes: int = _BLOCK
) -> tuple[int, int]:
    """Keep each category's ``k`` highest-scoring detections of a results file, streaming.

    The per-class top-k over the whole dataset that AP-fixed and AP-pooled evaluate (ties keep
    file order, as :func:`~loce.evaluation.results.top_k_per_group`). Two passes over ``src``
    in blocks: the first reads only ``category_id`` and ``score``; the second copies the
    kept detections' JSON text unchanged. Memory is one block plus two numbers per detection.
    ``dst`` may be ``src``: it is replaced atomically once written.

    Returns:
        ``(kept, total)`` detections.

    Raises:
        ResultsError: ``src`` is not a JSON list of detections with ``category_id`` and
            ``score``.
        FileWriteError: ``dst`` could not be written.
    """
    from loce.evaluation.results import top_k_per_group

    src = Path(src)
    ranked = msgspec.json.Decoder(list[_Ranked])
    categories, scores = [], []
    try:
        for block in _blocks(src, block_bytes):
            dets = ranked.decode(block)
            categories.append(np.fromiter((d.category_id for d in dets), np.int64, len(dets)))
            scores.append(np.fromiter((d.score for d in dets), np.float64, len(dets)))
    except (_Doubt, msgspec.DecodeError, msgspec.ValidationError, OverflowError) as err:
        raise ResultsError(
            f"{src}: cannot rank the detections per class ({err or 'not a JSON list'}); the "
            "file must be a JSON list of {image_id, category_id, score, ...} dicts."
        ) from None
    total = int(sum(c.shape[0] for c in categories))
    keep = top_k_per_group(
        np.concatenate(categories) if categories else np.zeros(0, np.int64),
        np.concatenate(scores) if scores else np.zeros(0),
        k,
    )
    del categories, scores
    return _write_detections(dst, [src], keep, block_bytes), total


def _write_detections(
    dst: str | os.PathLike[str],
    sources: Sequence[Path],
    keep: np.ndarray | None,
    block_bytes: int,
) -> int:
    """Write the detections of ``sources`` (where ``keep``, ``[N]`` bool) as one JSON list.

    Each detection's text is copied unchanged; returns how many were written.
    """
    from loce.fileio import atomic_write

    raw = msgspec.json.Decoder(list[msgspec.Raw])
    start = written = 0
    with atomic_write(dst, "wb", what="results file") as f:
        f.write(b"[")
        for src in sources:
            for block in _blocks(src, block_bytes):
                try:
                    items = raw.decode(bytes(block))  # raw items refer to their buffer
                except msgspec.DecodeError as err:
                    raise ResultsError(f"{src}: not a JSON list of detections ({err}).") from None
                chosen = items if keep is None else itertools.compress(
                    items, keep[start : start + len(items)])  # fmt: skip
                for item in chosen:
                    f.write((b",\n" if written else b"\n") + bytes(item))
                    written += 1
                start += len(items)
        f.write(b"\n]\n")
    return written


def merge_results_files(
    sources: Sequence[str | os.PathLike[str]], dst: str | os.PathLike[str], *,
    block_bytes: int = _BLOCK,
) -> int:  # fmt: skip
    """Concatenate JSON-list results files into one, a block at a time (no dict per detection).

    Used to merge the per-process shards of distributed evaluation. Returns the number of
    detections written; ``dst`` is written atomically.

    Raises:
        ResultsError: a source is not a JSON list.
        FileWriteError: ``dst`` could not be written.
    """
    paths = [Path(p) for p in sources]
    try:
        return _write_detections(dst, paths, None, block_bytes)
    except _Doubt:
        raise ResultsError(
            f"one of {', '.join(map(str, paths))} is not a JSON list of detections."
        ) from None
