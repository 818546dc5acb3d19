"""Checks of run-length-encoded (RLE) masks in the COCO format, without decoding them.

pycocotools decodes a malformed RLE without complaint (a garbage ``counts`` string gives some
mask, or none), so files are checked here first: the run lengths must be non-negative and sum
to ``height * width``. A compressed ``counts`` string is read with the COCO encoding: each run
length is a little-endian sequence of 5-bit groups stored as characters ``chr(48 + c)``
(``0x20`` marks a continuation, ``0x10`` in the last group the sign), and from the third run
on each value is a difference to the run two before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["encode_crop", "rle_problem"]


def _decode_counts(counts: str) -> list[int] | str:
    """Run lengths of a compressed counts string, or what is wrong with it."""
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                return "it ends in the middle of a run length"
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return f"character {counts[p]!r} at position {p} is not part of the encoding"
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def rle_problem(counts: str | Sequence[int], height: int, width: int) -> str | None:
    """What is wrong with an RLE's ``counts`` for a ``height`` x ``width`` mask, or None.

    Args:
        counts: a compressed counts string, or the list of run lengths (uncompressed RLE).
        height, width: the mask size (the RLE's ``size``).
    """
    runs = _decode_counts(counts) if isinstance(counts, str) else list(counts)
    if isinstance(runs, str):
        return f"'counts' is not a valid compressed RLE: {runs}"
    if any(r < 0 for r in runs):
        return "'counts' decodes to a negative run length"
    total = sum(runs)
    if total != height * width:
        return (f"'counts' covers {total} pixels but 'size' {[height, width]} has "
                f"{height * width}")
    return None


def encode_crop(crop: np.ndarray, top: int, left: int, height: int, width: int) -> dict:
    """The compressed RLE of a ``height x width`` mask that is zero outside ``crop``.

    Equal to ``pycocotools.mask.encode`` of the whole mask, without building it: the run
    lengths come from the crop's foreground pixels in column-major order.

    Args:
        crop: ``[h, w]`` bool, the mask's pixels ``[top, top + h) x [left, left + w)``.
        top, left: the crop's position in the mask.
        height, width: the mask's size.

    Returns:
        ``{"size": [height, width], "counts": str}``.
    """
    from pycocotools import mask as mask_utils

    total = height * width
    cols, rows = np.nonzero(crop.T)  # column-major: by column, then row
    pos = (cols.astype(np.int64) + left) * height + rows + top
    if pos.size == 0:
        counts = [total]
    else:
        breaks = np.flatnonzero(np.diff(pos) != 1)
        starts = np.concatenate([pos[:1], pos[breaks + 1]])
        ends = np.concatenate([pos[breaks], pos[-1:]]) + 1
        runs = np.empty(2 * starts.size + 1, dtype=np.int64)
        runs[0] = starts[0]
        runs[1::2] = ends - starts
        runs[2:-1:2] = starts[1:] - ends[:-1]
        runs[-1] = total - ends[-1]
        counts = runs[:-1].tolist() if runs[-1] == 0 else runs.tolist()
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
