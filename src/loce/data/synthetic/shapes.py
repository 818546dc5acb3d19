"""Family shapes as unit drawing operations ``(polygon [P, 2] xy, fill 1 or 0)``."""

from __future__ import annotations

import numpy as np

# Family shapes, in the order families take them (a dataset with n families uses the first n).
SHAPES: tuple[str, ...] = (
    "circle",
    "triangle",
    "square",
    "star",
    "ring",
    "cross",
    "crescent",
    "hexagon",
    "arrow",
    "heart",
    "semicircle",
    "ell",
    "teardrop",
    "flower",
    "hourglass",
    "lightning",
    "gear",
    "frame",
)


def _circle(n: int = 48, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _regular(n: int, r: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _radial(radii: np.ndarray, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(len(radii)) * 2 * np.pi / len(radii)
    return np.stack([radii * np.cos(t), radii * np.sin(t)], 1)


def _shape_ops(shape: str) -> list[tuple[np.ndarray, int]]:
    """Unit-size drawing operations ``(polygon [P,2] xy, fill 1 or 0)`` of a shape.

    Coordinates are in about ``[-1, 1]``, y pointing down; fill 0 cuts holes.
    """
    p = np.array
    if shape == "circle":
        return [(_circle(), 1)]
    if shape == "triangle":
        return [(_regular(3) + p([0.0, 0.25]), 1)]
    if shape == "square":
        return [(p([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 1)]
    if shape == "star":
        return [(_radial(np.tile([1.0, 0.45], 5)), 1)]
    if shape == "ring":
        return [(_circle(), 1), (_circle(r=0.55), 0)]
    if shape == "cross":
        a = 0.32
        pts = [
            [-a, -1],
            [a, -1],
            [a, -a],
            [1, -a],
            [1, a],
            [a, a],
            [a, 1],
            [-a, 1],
            [-a, a],
            [-1, a],
            [-1, -a],
            [-a, -a],
        ]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "crescent":
        return [(_circle(), 1), (_circle(r=0.82, cx=0.45, cy=-0.1), 0)]
    if shape == "hexagon":
        return [(_regular(6, phase=0.0), 1)]
    if shape == "arrow":
        pts = [
            [-1, -0.28],
            [0.15, -0.28],
            [0.15, -0.7],
            [1, 0],
            [0.15, 0.7],
            [0.15, 0.28],
            [-1, 0.28],
        ]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x / 17.0, (y + 2.5) / 17.0], 1), 1)]
    if shape == "semicircle":
        t = np.linspace(np.pi, 2 * np.pi, 33)
        return [(np.stack([np.cos(t), np.sin(t) + 0.45], 1), 1)]
    if shape == "ell":
        pts = [[-0.75, -1], [-0.15, -1], [-0.15, 0.4], [0.75, 0.4], [0.75, 1], [-0.75, 1]]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "teardrop":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return [(np.stack([np.cos(t) * 0.9, np.sin(t) * np.sin(t / 2) * 0.9], 1) * 1.1, 1)]
    if shape == "flower":
        t = np.arange(72) * 2 * np.pi / 72
        return [(_radial(0.72 + 0.28 * np.cos(6 * t)), 1)]
    if shape == "hourglass":
        pts = [[-0.8, -1], [0.8, -1], [0.16, 0], [0.8, 1], [-0.8, 1], [-0.16, 0]]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "lightning":
        pts = [
            [-0.15, -1],
            [0.6, -1],
            [0.2, -0.2],
            [0.6, -0.2],
            [-0.35, 1],
            [-0.05, 0.15],
            [-0.5, 0.15],
        ]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "gear":
        radii = np.tile([1.0, 1.0, 0.74, 0.74], 8)
        return [(_radial(radii, phase=0.0), 1), (_circle(r=0.3), 0)]
    if shape == "frame":
        outer = p([[-0.9, -0.9], [0.9, -0.9], [0.9, 0.9], [-0.9, 0.9]])
        return [(outer, 1), (outer * 0.55, 0)]
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


_SHAPE_CACHE: dict[str, list[tuple[np.ndarray, int]]] = {}


def _shape(shape: str) -> list[tuple[np.ndarray, int]]:
    if shape not in _SHAPE_CACHE:
        _SHAPE_CACHE[shape] = _shape_ops(shape)
    return _SHAPE_CACHE[shape]
