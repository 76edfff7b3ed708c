"""The SIMPLE SHAPES shape counter: the ground truth for hallucination on images.

An image is thresholded (at 0 in the model's [-1, 1] range, i.e. half intensity), split into
8-connected components, and each component is assigned to the column holding its centroid and
classified by comparing (area, bounding-box width, height) with every placement the generator can
produce at the same resolution (`shape_features`): a component is a well-formed shape s if some
placement of s matches it within `area_tol` (relative) and one pixel of width and height;
otherwise it is malformed. Components smaller than `min_area` (a quarter of the smallest shape)
are specks and ignored.

An image is in support iff it has at least one shape, no malformed component, and every column
holds at most one shape, of that column's type. Hallucination categories (an image can have
several; `primary` picks the first in this order):
- duplicate: a column holds two or more shapes of its own type (the paper's headline case);
- wrong_shape: a column holds a well-formed shape of another type;
- malformed: a component matches no shape (merged blobs, half shapes);
- empty: nothing but specks.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.data import shapes as sh
from mi_jax.validation import check

CATEGORIES = ("duplicate", "wrong_shape", "malformed", "empty")


@jax.jit
def label_components(binary: jax.Array) -> jax.Array:
    """8-connected component labels of (N, H, W) bool images: each foreground pixel gets the
    smallest flat index of its component, background -1. Min-label propagation until nothing
    changes (iterations ~ the largest component's diameter)."""
    n, h, w = binary.shape
    big = jnp.int32(h * w)
    init = jnp.where(binary, jnp.arange(h * w, dtype=jnp.int32).reshape(1, h, w), big)

    def spread(labels):
        pooled = jax.lax.reduce_window(labels, big, jax.lax.min, (1, 3, 3), (1, 1, 1), "SAME")
        return jnp.where(binary, pooled, big)

    def body(state):
        labels, _ = state
        new = spread(labels)
        return new, jnp.any(new != labels)

    labels, _ = jax.lax.while_loop(lambda s: s[1], body, (init, jnp.bool_(True)))
    return jnp.where(binary, labels, -1)


@dataclasses.dataclass
class Components:
    """Every component of a batch: image index, column, area, bbox width/height, centroid."""

    image: np.ndarray
    column: np.ndarray
    area: np.ndarray
    width: np.ndarray
    height: np.ndarray
    cy: np.ndarray
    cx: np.ndarray


def components(images, resolution: int, threshold: float = 0.0, chunk: int = 4096) -> Components:
    """Components of (N, R, R) (or (N, R, R, 1)) images in [-1, 1]."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    check(images.ndim == 3 and images.shape[1:] == (resolution, resolution), "images",
          images.shape, f"must be (N, {resolution}, {resolution}[, 1])")
    labels = np.full(images.shape, -1, np.int32)
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk] > threshold
        size = 1 << max(int(len(part) - 1).bit_length(), 6)  # few distinct sizes: few compiles
        padded = np.zeros((size,) + part.shape[1:], bool)
        padded[:len(part)] = part
        labels[i:i + len(part)] = np.asarray(label_components(jnp.asarray(padded)))[:len(part)]
    n_idx, ys, xs = np.nonzero(labels >= 0)
    keys = n_idx.astype(np.int64) * resolution * resolution + labels[n_idx, ys, xs]
    uniq, inv = np.unique(keys, return_inverse=True)
    area = np.bincount(inv).astype(np.int64)

    def reduce(values, fn, init):
        out = np.full(len(uniq), init, np.int64)
        fn.at(out, inv, values)
        return out

    y0, y1 = reduce(ys, np.minimum, resolution), reduce(ys, np.maximum, -1)
    x0, x1 = reduce(xs, np.minimum, resolution), reduce(xs, np.maximum, -1)
    cy = np.bincount(inv, ys) / np.maximum(area, 1)
    cx = np.bincount(inv, xs) / np.maximum(area, 1)
    col_width = sh.COLUMN_WIDTH * resolution / sh.FULL_SIZE
    column = np.clip(((cx + 0.5) // col_width).astype(np.int64), 0, len(sh.SHAPES) - 1)
    return Components(uniq // (resolution * resolution), column, area, x1 - x0 + 1, y1 - y0 + 1,
                      cy, cx)


@lru_cache(maxsize=None)
def shape_features(resolution: int) -> dict:
    """Every distinct (area, width, height) each shape takes over all its placements, when drawn
    alone and thresholded at this resolution: {shape: int array (F, 3)}."""
    feats = {}
    for j, shape in enumerate(sh.SHAPES):
        (xa, xb), (ya, yb) = sh.POSITIONS[shape]
        xs, ys = np.meshgrid(np.arange(xa, xb + 1), np.arange(ya, yb + 1))
        n = xs.size
        present = np.zeros((n, 3), bool)
        present[:, j] = True
        anchors_x = np.zeros((n, 3), np.int64)
        anchors_y = np.zeros((n, 3), np.int64)
        anchors_x[:, j], anchors_y[:, j] = xs.ravel(), ys.ravel()
        comps = components(sh.render(present, anchors_x, anchors_y, resolution), resolution)
        feats[shape] = np.unique(np.stack([comps.area, comps.width, comps.height], 1), axis=0)
    return feats


@dataclasses.dataclass
class ShapeCount:
    """Per image: counts (N, 3 columns, 3 shapes) of well-formed shapes; malformed (N, 3) per
    column; flags (N, len(CATEGORIES)) bool; in_support (N,); primary (N,) index into CATEGORIES
    or -1 when in support."""

    counts: np.ndarray
    malformed: np.ndarray
    flags: np.ndarray
    in_support: np.ndarray
    primary: np.ndarray

    def rates(self) -> dict:
        """Hallucination rate and the fraction of images in each category (flags and primary)."""
        n = max(len(self.in_support), 1)
        return {"num_images": int(len(self.in_support)),
                "hallucination_rate": float(1.0 - self.in_support.mean()) if len(self.in_support) else 0.0,
                "category_any": {c: float(self.flags[:, i].sum() / n) for i, c in enumerate(CATEGORIES)},
                "category_primary": {c: float((self.primary == i).sum() / n)
                                     for i, c in enumerate(CATEGORIES)},
                "count_primary": {c: int((self.primary == i).sum()) for i, c in enumerate(CATEGORIES)}}


def classify(comps: Components, resolution: int, area_tol: float = 0.2) -> np.ndarray:
    """(num_components, 3) bool: does each component match each shape?"""
    feats = shape_features(resolution)
    out = np.zeros((len(comps.area), len(sh.SHAPES)), bool)
    for j, shape in enumerate(sh.SHAPES):
        f = feats[shape]
        a_ok = np.abs(comps.area[:, None] - f[None, :, 0]) <= np.maximum(area_tol * f[None, :, 0], 1)
        w_ok = np.abs(comps.width[:, None] - f[None, :, 1]) <= 1
        h_ok = np.abs(comps.height[:, None] - f[None, :, 2]) <= 1
        out[:, j] = np.any(a_ok & w_ok & h_ok, axis=1)
    return out


def count_shapes(images, resolution: int, *, threshold: float = 0.0, area_tol: float = 0.2,
                 min_area: int | None = None) -> ShapeCount:
    """Count and classify the shapes of (N, R, R[, 1]) images in [-1, 1] (see the module doc)."""
    images = np.asarray(images)
    n = images.shape[0]
    comps = components(images, resolution, threshold)
    if min_area is None:
        min_area = max(1, int(min(f[:, 0].min() for f in shape_features(resolution).values()) // 4))
    real = comps.area >= min_area
    match = classify(comps, resolution, area_tol)
    own = match[np.arange(len(match)), comps.column]
    counts = np.zeros((n, 3, 3), np.int64)
    malformed = np.zeros((n, 3), np.int64)
    any_match = match.any(axis=1)
    # A component counts as its column's shape whenever it matches it (shapes can share features
    # at low resolution), else as the first other shape it matches, else as malformed.
    kind = np.where(own, comps.column, np.argmax(match, axis=1))
    good = real & any_match
    np.add.at(counts, (comps.image[good], comps.column[good], kind[good]), 1)
    bad = real & ~any_match
    np.add.at(malformed, (comps.image[bad], comps.column[bad]), 1)
    own_counts = counts[:, np.arange(3), np.arange(3)]
    wrong = counts.sum(axis=2) - own_counts
    flags = np.stack([(own_counts >= 2).any(1), (wrong > 0).any(1), (malformed > 0).any(1),
                      (counts.sum((1, 2)) + malformed.sum(1)) == 0], axis=1)
    in_support = ~flags.any(axis=1)
    primary = np.where(in_support, -1, np.argmax(flags, axis=1))
    return ShapeCount(counts, malformed, flags, in_support, primary)


def column_masks(resolution: int) -> np.ndarray:
    """(3, R, R, 1) float masks of the three columns (a pixel belongs to the column holding its
    centre), for per-column trajectory variance."""
    centres = (np.arange(resolution) + 0.5) * sh.FULL_SIZE / resolution
    col = np.minimum(centres // sh.COLUMN_WIDTH, len(sh.SHAPES))  # 3 = the black last column
    masks = np.stack([np.broadcast_to(col[None, :] == j, (resolution, resolution))
                      for j in range(len(sh.SHAPES))]).astype(np.float32)
    return masks[..., None]


__all__ = ["CATEGORIES", "ShapeCount", "count_shapes", "components", "label_components",
           "shape_features", "classify", "column_masks"]


def labelled_examples(resolution: int, per_kind: int = 20, seed: int = 0):
    """Hand-made images with known labels, for validating the counter: (images (N, R, R),
    expected primary category (N,): -1 in support, else an index into CATEGORIES, kind names).

    Kinds: in_support (generator draws); two_squares (one square at the top and one at the
    bottom of the square column: the paper's t-SNE "region 2"); merged_blob (two overlapping
    squares); half_square (the lower half of a square cut away); triangle_in_square_column;
    empty.
    """
    rng = np.random.default_rng(seed)
    n = per_kind
    full = sh.FULL_SIZE

    def one_square(x, y, rows=8):
        img = np.zeros((len(x), full, full), bool)
        for i, (xi, yi) in enumerate(zip(x, y)):
            img[i, yi:yi + rows, sh.COLUMN_WIDTH + xi:sh.COLUMN_WIDTH + xi + 8] = True
        return img

    kinds, images, expected = [], [], []

    def add(name, imgs01, category):
        images.append(sh.to_model_range(sh.downsample(imgs01.astype(np.float32), resolution)))
        kinds.extend([name] * len(imgs01))
        expected.extend([category] * len(imgs01))

    real = sh.generate(seed, n, sh.FULL_SIZE).images > 0
    add("in_support", real, -1)
    xs = rng.integers(1, 8, n)
    add("two_squares", one_square(xs, rng.integers(1, 20, n)) | one_square(rng.integers(1, 8, n),
                                                                          rng.integers(32, 50, n)),
        CATEGORIES.index("duplicate"))
    y0 = rng.integers(1, 40, n)
    add("merged_blob", one_square(xs, y0) | one_square(xs + 3, y0 + 4), CATEGORIES.index("malformed"))
    add("half_square", one_square(xs, rng.integers(1, 50, n), rows=4), CATEGORIES.index("malformed"))
    tri = np.zeros((n, 3), bool)
    tri[:, 0] = True
    moved = sh.render(tri, np.stack([rng.integers(0, 9, n)] * 3, 1),
                      np.stack([rng.integers(0, 52, n)] * 3, 1)) > 0
    add("triangle_in_square_column", np.roll(moved, sh.COLUMN_WIDTH, axis=2),
        CATEGORIES.index("wrong_shape"))
    add("empty", np.zeros((n, full, full), bool), CATEGORIES.index("empty"))
    return np.concatenate(images), np.asarray(expected), np.asarray(kinds)


def counter_accuracy(resolution: int, per_kind: int = 20, seed: int = 0) -> dict:
    """Fraction of `labelled_examples` whose primary category the counter gets right, per kind."""
    images, expected, kinds = labelled_examples(resolution, per_kind, seed)
    got = count_shapes(images, resolution).primary
    out = {str(k): float(np.mean(got[kinds == k] == expected[kinds == k])) for k in dict.fromkeys(kinds)}
    out["overall"] = float(np.mean(got == expected))
    return out
