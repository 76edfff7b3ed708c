"""SIMPLE SHAPES: the paper's synthetic image dataset, generated deterministically in NumPy.

Geometry of the official generator (`gen_simple_shapes_dataset.py`): a 64x64 grayscale image whose
top-left 63x63 holds three 21-pixel-wide columns, in the order triangle | square | pentagon. Each
shape is present independently with probability 0.5 at a uniformly random integer position inside
its column; images with no shape are rejected.

- square: `rectangle([x, y, x + 7, y + 7])`, 8x8 = 64 pixels; x in [1, 7], y in [1, 49].
- triangle: vertices (x, y), (x + 11, y), (x + 5, y + 9) (apex down); x in [0, 10], y in [0, 52].
- pentagon: circumradius 5 around (x, y), vertices at 72, 144, ..., 360 degrees; x in [5, 16],
  y in [5, 58].

Polygons are rasterised as PIL fills them, approximately: a pixel is on if its centre lies in the
closed polygon or within `EDGE_REACH` of an edge (PIL also draws the outline). That gives the
official pixel counts: square 64, triangle 64, pentagon 68 (official: 64, 65 +- 2, 70 +- 2). Shapes
that reach past their column (triangle at x = 10, pentagons near the edges) are clipped to it, as
PIL clips to the 21 x 63 strip. Each shape is one fixed pixel template translated by an integer
offset, so a whole dataset is one fancy-indexed write: 100 000 images take about a second.

A smaller `resolution` (a divisor of 64) average-pools the 64x64 image, for CPU-sized runs.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np

from mi_jax.validation import check, check_int

SHAPES = ("triangle", "square", "pentagon")
FULL_SIZE = 64
CANVAS = 63  # the three columns cover [0, 63) x [0, 63); the last row and column stay black
COLUMN_WIDTH = 21
PRESENCE_P = 0.5
EDGE_REACH = 0.35
# Vertices relative to the sampled anchor (x, y), and the anchor's inclusive ranges.
_PENTAGON_ANGLES = np.deg2rad(np.arange(72, 361, 72))
VERTICES = {
    "triangle": np.array([[0.0, 0.0], [11.0, 0.0], [5.0, 9.0]]),
    "square": np.array([[0.0, 0.0], [7.0, 0.0], [7.0, 7.0], [0.0, 7.0]]),
    "pentagon": np.stack([5 * np.cos(_PENTAGON_ANGLES), 5 * np.sin(_PENTAGON_ANGLES)], axis=1),
}
POSITIONS = {  # ((x_min, x_max), (y_min, y_max)), inclusive, in column coordinates
    "triangle": ((0, 10), (0, 52)),
    "square": ((1, 7), (1, 49)),
    "pentagon": ((5, 16), (5, 58)),
}


def _inside_closed_polygon(px, py, verts):
    inside = np.zeros(px.shape, bool)
    n = len(verts)
    for i in range(n):
        (x0, y0), (x1, y1) = verts[i], verts[(i + 1) % n]
        crosses = (y0 > py) != (y1 > py)
        x_cross = (x1 - x0) * (py - y0) / np.where(y1 == y0, 1.0, y1 - y0) + x0
        inside ^= crosses & (px < x_cross)
    return inside


def _near_edges(px, py, verts, reach):
    near = np.zeros(px.shape, bool)
    n = len(verts)
    for i in range(n):
        a, b = verts[i], verts[(i + 1) % n]
        d = b - a
        s = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / (d @ d), 0.0, 1.0)
        near |= np.hypot(px - a[0] - s * d[0], py - a[1] - s * d[1]) <= reach
    return near


@lru_cache(maxsize=None)
def template(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (dy, dx) of `shape` relative to its anchor (unclipped)."""
    check(shape in SHAPES, "shape", shape, f"must be one of {SHAPES}")
    verts = VERTICES[shape]
    lo = np.floor(verts.min(0)).astype(int) - 1
    hi = np.ceil(verts.max(0)).astype(int) + 1
    ys, xs = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].astype(np.float64)
    on = _inside_closed_polygon(xs, ys, verts) | _near_edges(xs, ys, verts, EDGE_REACH)
    return ys[on].astype(np.int32), xs[on].astype(np.int32)


@dataclasses.dataclass
class ShapesData:
    """images: (N, R, R) float32 in [-1, 1]; present (N, 3) bool; x, y (N, 3) anchors (column
    coordinates, meaningful where present), one column per entry of SHAPES."""

    images: np.ndarray
    present: np.ndarray
    x: np.ndarray
    y: np.ndarray


def render(present, x, y, resolution: int = FULL_SIZE) -> np.ndarray:
    """Images (N, R, R) in [-1, 1] with shape j of SHAPES at anchor (x[:, j], y[:, j]) of column j
    wherever present[:, j]; clipped to the column."""
    present = np.asarray(present, bool)
    x, y = np.asarray(x, np.int64), np.asarray(y, np.int64)
    n = present.shape[0]
    canvas = np.zeros((n, FULL_SIZE, FULL_SIZE), bool)
    for j, shape in enumerate(SHAPES):
        dy, dx = template(shape)
        rows = np.flatnonzero(present[:, j])
        py = y[rows, j][:, None] + dy[None]
        px = x[rows, j][:, None] + dx[None]
        keep = (py >= 0) & (py < CANVAS) & (px >= 0) & (px < COLUMN_WIDTH)
        idx = np.broadcast_to(rows[:, None], py.shape)
        canvas[idx[keep], py[keep], px[keep] + j * COLUMN_WIDTH] = True
    return to_model_range(downsample(canvas, resolution))


def downsample(images01: np.ndarray, resolution: int) -> np.ndarray:
    """Average-pool (N, 64, 64) images to (N, R, R)."""
    check_int(resolution, "resolution", low=1, high=FULL_SIZE)
    check(FULL_SIZE % resolution == 0, "resolution", resolution, "must divide 64")
    f = FULL_SIZE // resolution
    if f == 1:
        return images01
    n = images01.shape[0]
    return images01.reshape(n, resolution, f, resolution, f).mean(axis=(2, 4), dtype=np.float32)


def to_model_range(images01: np.ndarray) -> np.ndarray:
    """[0, 1] (or bool) -> [-1, 1] float32."""
    out = np.asarray(images01, np.float32) * np.float32(2.0)
    out -= np.float32(1.0)
    return out


def generate(seed: int, num: int = 5000, resolution: int = FULL_SIZE) -> ShapesData:
    """`num` SIMPLE SHAPES images from `seed` (NumPy PCG64): the same seed gives the same images."""
    check_int(seed, "seed", low=0)
    num = check_int(num, "num", low=1)
    rng = np.random.default_rng(seed)
    present_parts, kept = [], 0
    while kept < num:  # reject all-black draws (1 in 8), as the official generator does
        draw = rng.random((num, len(SHAPES))) < PRESENCE_P
        draw = draw[draw.any(axis=1)]
        present_parts.append(draw)
        kept += len(draw)
    present = np.concatenate(present_parts)[:num]
    x = np.stack([rng.integers(POSITIONS[s][0][0], POSITIONS[s][0][1] + 1, num) for s in SHAPES], 1)
    y = np.stack([rng.integers(POSITIONS[s][1][0], POSITIONS[s][1][1] + 1, num) for s in SHAPES], 1)
    return ShapesData(render(present, x, y, resolution), present, x, y)


__all__ = ["SHAPES", "ShapesData", "generate", "render", "downsample", "template", "POSITIONS"]
