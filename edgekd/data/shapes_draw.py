"""Drawing the ``shapes`` data set: one RGB scene per (seed, index), at any resolution.

A scene is a coloured background (a base colour, a linear gradient, a soft blob), clutter
(thin line segments), one object and pixel noise. The object's kind is the class: a solid shape
(disc, square, triangle, ...) or a texture (stripes, checker, dots) filling a disc or a
square. Its colour, position, scale, aspect, rotation and the clutter vary within a class, so
neither the mean colour nor the position tells the classes apart.

Everything is drawn in continuous coordinates ([-1, 1] across the image), so one scene looks
the same at 16 px and at 224 px; edges are anti-aliased over one pixel. The parameters of image
``i`` come from ``numpy.random.default_rng((SALT, seed, i))`` alone: an image never depends on
how many others are drawn, nor on the order they are drawn in.
"""
from __future__ import annotations

import math

import numpy as np

SALT = 0x5A4E5  # keeps these streams apart from any other use of (seed, i)
KINDS = ("disc", "square", "triangle", "ring", "cross", "star", "stripes", "checker", "dots",
         "crescent", "frame", "bar")
TEXTURES = frozenset({"stripes", "checker", "dots"})
SCALE = (0.35, 0.6)       # the object's half-size, as a fraction of the half-image
EXTENT = 1.1              # every kind fits in a local radius of EXTENT


def pixel_centres(res: int) -> np.ndarray:
    """The x (or y) coordinate of each pixel centre, in [-1, 1]."""
    return ((np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0).astype(np.float32)


def _box(cx: float, cy: float, r: float, res: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels within ``r`` (plus a pixel) of (cx, cy)."""
    pad = r + 2.0 / res

    def span(c: float) -> slice:
        lo = int(math.floor((c - pad + 1.0) * res / 2.0))
        hi = int(math.ceil((c + pad + 1.0) * res / 2.0))
        return slice(max(lo, 0), min(hi, res))
    return span(cy), span(cx)


def _coverage(sdf: np.ndarray, pix: float) -> np.ndarray:
    """Anti-aliased coverage of a signed distance (negative inside), in place."""
    sdf *= -1.0 / pix
    sdf += 0.5
    return np.clip(sdf, 0.0, 1.0, out=sdf)


def _paint(img: np.ndarray, rows: slice, cols: slice, alpha: np.ndarray, colour) -> None:
    """img[:, rows, cols] += alpha * (colour - img[:, rows, cols]) (colour: 3 values or 3×h×w)."""
    region = img[:, rows, cols]
    colour = np.asarray(colour, dtype=np.float32)
    if colour.ndim == 1:
        colour = colour[:, None, None]
    region += alpha[None] * (colour - region)


def _shape_sdf(kind: str, x: np.ndarray, y: np.ndarray,
               rng) -> tuple[np.ndarray, np.ndarray | None]:
    """(signed distance of the outline, texture mix in [0, 1] or None) in local units."""
    ax, ay = np.abs(x), np.abs(y)
    if kind in TEXTURES:
        region = (np.hypot(x, y) - 0.9) if rng.random() < 0.5 else (np.maximum(ax, ay) - 0.75)
        return region, _texture(kind, x, y, rng)
    if kind == "disc":
        return np.hypot(x, y) - 0.9, None
    if kind == "square":
        return np.maximum(ax, ay) - 0.75, None
    if kind == "triangle":  # circumradius 1, inradius 0.5
        d = y - 0.5
        for a in (math.radians(210), math.radians(330)):
            d = np.maximum(d, x * math.cos(a) + y * math.sin(a) - 0.5)
        return d, None
    if kind == "ring":
        return np.abs(np.hypot(x, y) - 0.68) - 0.22, None
    if kind == "cross":
        return np.minimum(np.maximum(ax - 0.28, ay - 0.9), np.maximum(ax - 0.9, ay - 0.28)), None
    if kind == "star":  # five points, radius 0.45 between them and 0.95 at their tips
        lobe = 0.5 + 0.5 * np.cos(5.0 * np.arctan2(y, x))
        return np.hypot(x, y) - (0.45 + 0.5 * lobe * lobe), None
    if kind == "crescent":
        return np.maximum(np.hypot(x, y) - 0.9, 0.72 - np.hypot(x - 0.45, y)), None
    if kind == "frame":
        return np.abs(np.maximum(ax, ay) - 0.6) - 0.16, None
    if kind == "bar":
        return np.maximum(ax - 0.95, ay - 0.24), None
    raise ValueError(kind)


def _texture(kind: str, x: np.ndarray, y: np.ndarray, rng) -> np.ndarray:
    """Where the second colour shows (0..1) inside a textured object, in local units."""
    phase = rng.uniform(0.0, 2.0 * math.pi, 2)
    if kind == "stripes":
        w = 2.0 * math.pi / 0.5
        return np.clip(0.5 + 2.0 * np.sin(w * x + phase[0]), 0.0, 1.0)
    if kind == "checker":
        w = 2.0 * math.pi / 0.7
        return np.clip(0.5 + 4.0 * np.sin(w * x + phase[0]) * np.sin(w * y + phase[1]), 0.0, 1.0)
    period = 0.5  # dots: radius 0.13 on a square grid
    u = np.mod(x + phase[0] / (2 * math.pi) * period, period) - period / 2
    v = np.mod(y + phase[1] / (2 * math.pi) * period, period) - period / 2
    return np.clip(0.5 - (np.hypot(u, v) - 0.13) * 12.0, 0.0, 1.0)


def _palette(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background, object and second (texture) colours. The object is lighter than a dark
    background and darker than a light one, by 0.35-0.6 in every channel before a hue jitter,
    so it always stands out; the texture's second colour lies between the two."""
    bg = np.clip(rng.random() + rng.uniform(-0.25, 0.25, 3), 0.0, 1.0)
    sign = 1.0 if bg.mean() < 0.5 else -1.0
    fg = np.clip(bg + sign * rng.uniform(0.35, 0.6) + rng.uniform(-0.2, 0.2, 3), 0.0, 1.0)
    fg2 = np.clip(fg - sign * rng.uniform(0.25, 0.4) + rng.uniform(-0.1, 0.1, 3), 0.0, 1.0)
    return bg.astype(np.float32), fg.astype(np.float32), fg2.astype(np.float32)


def noise_tile(seed: int, res: int) -> np.ndarray:
    """Uniform noise in [0, 1) (3×2res×2res float32) that every image of (seed, res) takes a
    window of: drawing fresh noise per image would cost more than drawing the image."""
    rng = np.random.default_rng((SALT + 1, int(seed), int(res)))
    return rng.random((3, 2 * res, 2 * res), dtype=np.float32)


def draw(index: int, label: int, *, seed: int, res: int, clutter: float, kinds=KINDS,
         grid: np.ndarray | None = None, noise: np.ndarray | None = None) -> np.ndarray:
    """Image ``index`` (3×res×res uint8) showing an object of kind ``kinds[label]``.
    ``grid`` and ``noise`` (pixel_centres(res), noise_tile(seed, res)) save recomputing them."""
    rng = np.random.default_rng((SALT, int(seed), int(index)))
    c = pixel_centres(res) if grid is None else grid
    pix = 2.0 / res
    bg, fg, fg2 = (255.0 * col for col in _palette(rng))  # drawn in 0..255
    grad = rng.uniform(-0.15 * 255, 0.15 * 255, (2, 3)).astype(np.float32)
    amp = np.float32(255.0 * clutter * rng.uniform(0.0, 0.3))  # uniform noise, added last
    column = (bg - amp / 2)[:, None] + grad[1][:, None] * c[None, :]
    img = column[:, :, None] + (grad[0][:, None] * c[None, :])[:, None, :]

    # Clutter: a soft blob (separable Gaussian), then thin segments, all behind the object.
    if rng.random() < clutter:
        bx, by = rng.uniform(-1, 1, 2)
        sigma = rng.uniform(0.15, 0.4)
        rows, cols = _box(bx, by, 2.5 * sigma, res)
        gx = np.exp(-((c[cols] - bx) ** 2) / (2 * sigma ** 2)).astype(np.float32)
        gy = np.exp(-((c[rows] - by) ** 2) / (2 * sigma ** 2)).astype(np.float32)
        alpha = np.float32(rng.uniform(0.2, 0.5)) * gy[:, None] * gx[None, :]
        _paint(img, rows, cols, alpha, 255.0 * rng.random(3))
    for _ in range(int(rng.integers(0, 1 + round(6 * clutter)))):
        x0, y0 = rng.uniform(-1, 1, 2)
        ang, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.7)
        half = rng.uniform(0.008, 0.025)
        dx, dy = length * math.cos(ang), length * math.sin(ang)
        rows, cols = _box(x0 + dx / 2, y0 + dy / 2, length / 2 + half, res)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        px, py = c[cols][None, :] - x0, c[rows][:, None] - y0
        t = np.clip((px * dx + py * dy) / (length * length), 0.0, 1.0)
        dist = np.hypot(px - t * dx, py - t * dy) - half
        _paint(img, rows, cols, _coverage(dist, pix), 255.0 * rng.random(3))

    # The object.
    kind = kinds[label]
    s = rng.uniform(*SCALE)
    aspect = math.sqrt(rng.uniform(0.8, 1.25))
    sx, sy = s * aspect, s / aspect
    reach = 1.0 - EXTENT * max(sx, sy)
    cx, cy = rng.uniform(-reach, reach, 2)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    rows, cols = _box(cx, cy, EXTENT * max(sx, sy), res)
    px, py = c[cols][None, :] - cx, c[rows][:, None] - cy
    cos, sin = math.cos(theta), math.sin(theta)
    x = (px * cos + py * sin) / sx
    y = (py * cos - px * sin) / sy
    sdf, mix = _shape_sdf(kind, x, y, rng)
    alpha = _coverage(sdf * min(sx, sy), pix)
    colour = fg if mix is None else fg[:, None, None] + (fg2 - fg)[:, None, None] * mix[None]
    _paint(img, rows, cols, alpha, colour)

    oy, ox = rng.integers(0, res, 2)
    if amp > 0:
        noise = noise_tile(seed, res) if noise is None else noise
        img += amp * noise[:, oy:oy + res, ox:ox + res]
    img += 0.5  # round, not truncate
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


def draw_many(indices, labels, *, seed: int, res: int, clutter: float, kinds=KINDS,
              out: np.ndarray | None = None) -> np.ndarray:
    """Images ``indices`` (N×3×res×res uint8), written into ``out`` when given."""
    n = len(indices)
    if out is None:
        out = np.empty((n, 3, res, res), dtype=np.uint8)
    grid, noise = pixel_centres(res), noise_tile(seed, res)
    for j, (i, label) in enumerate(zip(indices, labels)):
        out[j] = draw(int(i), int(label), seed=seed, res=res, clutter=clutter, kinds=kinds,
                      grid=grid, noise=noise)
    return out
