"""Masks to LVIS/COCO polygons that pycocotools decodes back to exactly the same pixels."""

from __future__ import annotations

import numpy as np


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove vertices lying on the straight line through their neighbours (exact test)."""
    prev = np.roll(ring, 1, axis=0)
    nxt = np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) - (ring[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - ring[:, 0]
    )
    keep = cross != 0
    return ring[keep] if keep.sum() >= 3 else ring


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons (LVIS/COCO ``segmentation``) whose pycocotools decoding equals ``mask``.

    Each 4-connected component gives one polygon along its pixel borders. Holes are joined to
    their component's outer boundary by a bridge walked there and back: pycocotools fills
    polygons with the even-odd rule, so the doubled bridge cancels and the hole stays empty.

    Args:
        mask: [H, W] bool mask.

    Returns:
        A list of flat ``[x1, y1, x2, y2, ...]`` lists (coordinates are multiples of 0.5); empty
        for an empty mask.
    """
    from skimage.measure import find_contours, label, regionprops

    mask = np.asarray(mask, dtype=bool)
    polygons: list[list[float]] = []
    if not mask.any():
        return polygons
    # find_contours(fully_connected="low") treats foreground as 4-connected: label the same way.
    labels = label(mask, connectivity=1)
    for region in regionprops(labels):
        r0, c0, r1, c1 = region.bbox
        sub = np.pad(labels[r0:r1, c0:c1] == region.label, 1).astype(np.float32)
        rings = []
        for contour in find_contours(sub, 0.5):
            # (row, col) on the padded crop -> (x, y) in COCO pixel coordinates, where pixel
            # (i, j) covers [j, j + 1) x [i, i + 1): contour points fall on pixel borders.
            ring = np.stack([contour[:-1, 1] + c0 - 0.5, contour[:-1, 0] + r0 - 0.5], axis=1)
            rings.append(_drop_collinear(ring))
        areas = [
            abs(
                float(np.dot(r[:, 0], np.roll(r[:, 1], -1)) - np.dot(r[:, 1], np.roll(r[:, 0], -1)))
            )
            for r in rings
        ]
        outer_index = int(np.argmax(areas))
        outer = rings[outer_index]
        bridges: dict[int, list[np.ndarray]] = {}
        for i, hole in enumerate(rings):
            if i != outer_index:
                j = int(np.argmin(((outer - hole[0]) ** 2).sum(axis=1)))
                bridges.setdefault(j, []).append(hole)
        points: list[np.ndarray] = []
        for j, vertex in enumerate(outer):
            points.append(vertex)
            for hole in bridges.get(j, []):
                points.extend(hole)
                points.append(hole[0])
                points.append(vertex)
        flat = np.round(np.asarray(points) * 2) / 2
        polygons.append([float(v) for v in flat.ravel()])
    return polygons
