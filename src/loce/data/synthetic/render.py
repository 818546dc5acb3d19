"""Rendering one planned image with the exact visible silhouette of every object.

Backgrounds are crops of scikit-image's bundled public-domain/CC0 photographs and textures, or
smooth colour noise, overlaid with blobs and strokes that are not categories. Objects vary in
size (``min_object_px`` to ``max_object_frac`` of the side, log-uniform), aspect, rotation and
position, and occlude each other; an object is only placed where every object below it keeps
``min_visible`` of its area visible, so no drawn object goes unannotated. Each image has its own
generator seeded by ``(seed, split, index)``, so images render in parallel and the output is
byte-identical for a seed. ``S`` is the image side in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from loce.data.synthetic.config import _SPLIT_CODE, SynthConfig
from loce.data.synthetic.plan import COLOURS, ImagePlan, SynthCategory
from loce.data.synthetic.shapes import _shape

# Colours on which a light secondary colour has too little contrast get a dark one.
_LIGHT_COLOURS = frozenset({"orange", "yellow", "cyan", "pink"})
_LIGHT = np.array([0.96, 0.96, 0.93], dtype=np.float32)
_DARK = np.array([0.10, 0.10, 0.12], dtype=np.float32)
_PLACEMENT_TRIES = 40
_MIN_VISIBLE_PIXELS = 40
_MIN_IN_FRAME = 0.75

# scikit-image's bundled images: all public domain or CC0 (see their docstrings).
_PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
_TEXTURE_NAMES = ("camera", "brick", "grass", "gravel")
_PHOTO_CACHE: list[np.ndarray] = []


def _photos() -> list[np.ndarray]:
    """Bundled images as uint8 arrays (grey ones as [H,W]); loaded once per process."""
    if not _PHOTO_CACHE:
        import skimage.data

        for name in _PHOTO_NAMES + _TEXTURE_NAMES:
            _PHOTO_CACHE.append(np.ascontiguousarray(getattr(skimage.data, name)()))
    return _PHOTO_CACHE


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Smooth random field in [0, 1], [size, size, channels] float32 (bicubic upsampling)."""
    from PIL import Image

    low = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    img = Image.fromarray(low if channels == 3 else low[:, :, 0])
    up = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return up if channels == 3 else up[:, :, None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered background, [S, S, 3] float32 in [0, 1]."""
    from PIL import Image, ImageDraw

    if rng.random() < 0.7:
        photos = _photos()
        src = photos[int(rng.integers(len(photos)))]
        h, w = src.shape[:2]
        side = int(rng.uniform(0.25, 1.0) * min(h, w))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(src[y0 : y0 + side, x0 : x0 + side])
        crop = crop.resize((size, size), Image.Resampling.BILINEAR)
        bg = np.asarray(crop, dtype=np.float32) / 255.0
        if bg.ndim == 2:  # grey texture: tint it
            bg = bg[:, :, None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        mix = rng.uniform(0.0, 0.35)
    else:
        bg = _smooth_noise(rng, size, int(rng.integers(3, 9)), 3)
        mix = rng.uniform(0.2, 0.5)
    noise = _smooth_noise(rng, size, int(rng.integers(4, 16)), 3)
    bg = (1 - mix) * bg + mix * noise
    bg = (bg - 0.5) * rng.uniform(0.6, 1.1) + 0.5 + rng.uniform(-0.12, 0.12)

    # Distractors that are not categories: irregular blobs and strokes.
    img = Image.fromarray((np.clip(bg, 0, 1) * 255).astype(np.uint8))
    for _ in range(int(rng.integers(0, 4))):
        blob = _smooth_noise(rng, size, int(rng.integers(3, 7)), 1)[:, :, 0]
        level = rng.uniform(0.7, 0.85)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        img.paste(colour, mask=Image.fromarray(((blob > level) * 255).astype(np.uint8)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 8))):
        n_pts = int(rng.integers(2, 6))
        pts = [tuple(float(v) for v in rng.uniform(-0.1, 1.1, 2) * size) for _ in range(n_pts)]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        width = int(rng.integers(1, max(2, size // 56) + 1))
        draw.line(pts, fill=colour, width=width, joint="curve")
    return np.asarray(img, dtype=np.float32) / 255.0


@dataclass
class _Object:
    category: SynthCategory
    x0: int  # local canvas origin in image coordinates (may be outside the image)
    y0: int
    mask: np.ndarray  # [h, w] bool, the full (unoccluded, unclipped) shape
    cx: float
    cy: float
    diameter: float
    angle: float
    full_area: int = 0
    visible: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # [S, S]


def _rasterize(
    ops: list[tuple[np.ndarray, int]], cx: float, cy: float, sx: float, sy: float, angle: float
) -> tuple[int, int, np.ndarray]:
    """Rasterize a unit shape scaled by (sx, sy), rotated and centred at (cx, cy).

    Returns:
        ``(x0, y0, mask)``: the local canvas origin and its [h, w] bool mask.
    """
    from PIL import Image, ImageDraw

    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    polys = [((pts * np.array([sx, sy])) @ rot.T + np.array([cx, cy]), fill) for pts, fill in ops]
    allpts = np.concatenate([q for q, _ in polys])
    x0 = int(math.floor(allpts[:, 0].min())) - 1
    y0 = int(math.floor(allpts[:, 1].min())) - 1
    w = int(math.ceil(allpts[:, 0].max())) - x0 + 2
    h = int(math.ceil(allpts[:, 1].max())) - y0 + 2
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for q, fill in polys:
        # PIL samples pixel (i, j) at its centre (i + 0.5, j + 0.5) in continuous coordinates;
        # shifting by 0.5 makes the fill follow the continuous polygon.
        local = q - np.array([x0 + 0.5, y0 + 0.5])
        draw.polygon([tuple(v) for v in local.tolist()], fill=255 * fill)
    return x0, y0, np.asarray(canvas) > 0


def _place(
    rng: np.random.Generator, config: SynthConfig, category: SynthCategory, small: bool
) -> tuple[int, int, np.ndarray, float, float, float, float]:
    """Draw a random pose for an object and rasterize it.

    The extent is log-uniform in ``[min_object_px, max_object_frac * S]`` (``small``: in the
    lower half of that range, in log scale), the aspect ratio in ``[0.7, 1.4]``, the rotation
    uniform; the centre keeps most of the object inside the frame.
    """
    size = config.image_size
    lo, hi = math.log(config.min_object_px), math.log(config.max_object_frac * size)
    if small:
        hi = 0.5 * (lo + hi)
    diameter = math.exp(rng.uniform(lo, hi))
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    angle = rng.uniform(0, 2 * math.pi)
    margin = 0.3 * diameter
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    sx, sy = 0.5 * diameter * math.sqrt(aspect), 0.5 * diameter / math.sqrt(aspect)
    x0, y0, mask = _rasterize(_shape(category.shape), cx, cy, sx, sy, angle)
    return x0, y0, mask, cx, cy, diameter, angle


def _in_frame(x0: int, y0: int, mask: np.ndarray, size: int) -> np.ndarray:
    """Paste a local mask into a [size, size] bool frame (clipping at the borders)."""
    frame = np.zeros((size, size), dtype=bool)
    h, w = mask.shape
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, size), min(y0 + h, size)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return frame


def _texture(
    rng: np.random.Generator, obj: _Object, size: int
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Colour of the object over its in-frame bounding box, [h, w, 3] float32."""
    h, w = obj.mask.shape
    fx0, fy0 = max(obj.x0, 0), max(obj.y0, 0)
    fx1, fy1 = min(obj.x0 + w, size), min(obj.y0 + h, size)
    ys = np.arange(fy0, fy1, dtype=np.float32)[:, None] + 0.5 - obj.cy
    xs = np.arange(fx0, fx1, dtype=np.float32)[None, :] + 0.5 - obj.cx
    # Pattern frame: rotates with the object, plus a per-instance offset.
    phi = obj.angle + rng.uniform(0, math.pi)
    pu = xs * math.cos(phi) + ys * math.sin(phi)
    pv = -xs * math.sin(phi) + ys * math.cos(phi)
    cat = obj.category
    base = np.array(COLOURS[cat.colour], dtype=np.float32)
    base = np.clip(base * rng.uniform(0.85, 1.1) + rng.normal(0, 0.025, 3), 0, 1).astype(np.float32)
    second = _DARK if cat.colour in _LIGHT_COLOURS else _LIGHT
    d = obj.diameter
    if cat.pattern == "solid":
        t = np.zeros(pu.shape, dtype=np.float32)
    elif cat.pattern == "striped":
        period = max(6.0, d / rng.uniform(2.5, 4.0))
        t = (np.floor((pu + rng.uniform(0, period)) / (period / 2)) % 2).astype(np.float32)
    elif cat.pattern == "dotted":
        period = max(6.0, d / rng.uniform(3.0, 4.5))
        du = np.mod(pu + rng.uniform(0, period), period) - period / 2
        dv = np.mod(pv + rng.uniform(0, period), period) - period / 2
        t = (du**2 + dv**2 < (0.3 * period) ** 2).astype(np.float32)
    elif cat.pattern == "checkered":
        cell = max(4.0, d / rng.uniform(3.0, 5.0))
        t = ((np.floor(pu / cell) + np.floor(pv / cell)) % 2).astype(np.float32)
    elif cat.pattern == "gradient":
        t = np.clip(pu / d + 0.5, 0.0, 1.0).astype(np.float32) * 0.9
    else:  # pragma: no cover - PATTERNS is closed
        raise AssertionError(cat.pattern)
    colour = base * (1 - t[..., None]) + second * t[..., None]
    # Soft lighting and sensor noise so no two instances are pixel-identical.
    light_dir = rng.uniform(0, 2 * math.pi)
    light = 1.0 + 0.12 * (xs * math.cos(light_dir) + ys * math.sin(light_dir)) / max(d, 1.0)
    colour = colour * light[..., None] + rng.normal(0, 0.02, colour.shape).astype(np.float32)
    return colour.astype(np.float32), (slice(fy0, fy1), slice(fx0, fx1))


@dataclass
class RenderedImage:
    """Output of :func:`render_image`.

    Attributes:
        image: [S, S, 3] uint8 RGB image.
        category_ids: category of each annotated instance, bottom to top.
        visible_masks: [S, S] bool visible silhouette of each instance (same order).
        full_areas: pixel area of each instance's whole shape, before occlusion and clipping.
        dropped: planned instances that could not be placed without hiding others.
    """

    image: np.ndarray
    category_ids: list[int]
    visible_masks: list[np.ndarray]
    full_areas: list[int]
    dropped: int


def _place_objects(
    rng: np.random.Generator, categories: Sequence[SynthCategory], config: SynthConfig
) -> tuple[list[_Object], int]:
    """Place one object per entry of ``categories`` (in that z-order; see :func:`render_image`).

    Returns:
        ``(objects, dropped)``: the placed objects bottom to top, with their visible masks, and
        the number that found no place.
    """
    size = config.image_size
    objects: list[_Object] = []  # bottom to top
    dropped = 0
    for category in categories:
        placed = None
        for attempt in range(2 * _PLACEMENT_TRIES):
            # Half-way through each phase, retry smaller: small objects fit more easily.
            small = attempt % _PLACEMENT_TRIES >= _PLACEMENT_TRIES // 2
            x0, y0, mask, cx, cy, diameter, angle = _place(rng, config, category, small)
            full_area = int(mask.sum())
            frame = _in_frame(x0, y0, mask, size)
            in_frame = int(frame.sum())
            if in_frame < _MIN_VISIBLE_PIXELS or in_frame < _MIN_IN_FRAME * full_area:
                continue
            on_top = attempt < _PLACEMENT_TRIES
            if on_top:
                ok = all(
                    _enough_visible(int((o.visible & ~frame).sum()), o.full_area, config)
                    for o in objects
                )
                if not ok:
                    continue
            else:
                covered = np.zeros((size, size), dtype=bool)
                for o in objects:
                    covered |= o.visible
                if not _enough_visible(int((frame & ~covered).sum()), full_area, config):
                    continue
            obj = _Object(category, x0, y0, mask, cx, cy, diameter, angle, full_area, frame)
            if on_top:
                for o in objects:
                    o.visible = o.visible & ~frame
                objects.append(obj)
            else:
                obj.visible = frame & ~covered
                objects.insert(0, obj)
            placed = obj
            break
        if placed is None:
            dropped += 1
    return objects, dropped


def render_image(
    plan: ImagePlan, categories: Sequence[SynthCategory], config: SynthConfig
) -> RenderedImage:
    """Render one planned image with its exact visible masks.

    The objects are placed in a random z-order, each on top of the ones before. A position is
    accepted when the new object is at least 75% inside the frame and leaves every object below
    it at least ``min_visible`` of its area (and 40 pixels) visible; after 40 rejected tries
    (shrinking the object as it goes) the object is tried underneath all others, and only then
    dropped.

    Args:
        plan: the image's plan.
        categories: all categories, ordered by id.
        config: dataset settings.

    Returns:
        The :class:`RenderedImage`; deterministic for ``(config.seed, plan.split, plan.index)``.
    """
    size = config.image_size
    rng = np.random.default_rng([config.seed, 104, _SPLIT_CODE[plan.split], plan.index])
    by_id = {c.id: c for c in categories}
    canvas = _background(rng, size)
    order = [plan.category_ids[i] for i in rng.permutation(len(plan.category_ids))]
    objects, dropped = _place_objects(rng, [by_id[cat_id] for cat_id in order], config)

    # Paint bottom to top; the visible masks were kept up to date while placing.
    for obj in objects:
        colour, (sy, sx) = _texture(rng, obj, size)
        local = obj.mask[sy.start - obj.y0 : sy.stop - obj.y0, sx.start - obj.x0 : sx.stop - obj.x0]
        region = canvas[sy, sx]
        region[local] = colour[local]
    canvas += rng.normal(0, 0.015, canvas.shape).astype(np.float32)
    image = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    return RenderedImage(
        image=image,
        category_ids=[o.category.id for o in objects],
        visible_masks=[o.visible for o in objects],
        full_areas=[o.full_area for o in objects],
        dropped=dropped,
    )


def _enough_visible(visible: int, full_area: int, config: SynthConfig) -> bool:
    return visible >= config.min_visible * full_area and visible >= _MIN_VISIBLE_PIXELS
