"""Bring your own images: a folder of PNGs as a training set in the model's range.

Images are read with matplotlib (no extra dependency), converted to grayscale by averaging the
colour channels (alpha ignored), average-pooled to `resolution` when their side is a multiple of
it, and scaled to [-1, 1]. All images must be square and of one size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.validation import InputError


def load_png_folder(path, resolution: int, limit: int | None = None) -> np.ndarray:
    """(N, R, R, 1) float32 in [-1, 1] from the *.png files of `path`, in sorted name order."""
    import matplotlib.image as mpimg

    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"--images_dir={str(path)!r}: not a directory")
    files = sorted(folder.glob("*.png"))[:limit]
    if not files:
        raise InputError(f"--images_dir={str(path)!r}: holds no .png files")
    out = []
    for f in files:
        try:
            img = np.asarray(mpimg.imread(f), np.float32)
        except Exception as e:  # PIL / matplotlib raise assorted types for bad files
            raise InputError(f"--images_dir={str(path)!r}: cannot read {f.name} "
                             f"({type(e).__name__})") from None
        if img.ndim == 3:
            img = img[..., :3].mean(axis=-1) if img.shape[-1] >= 3 else img[..., 0]
        if img.max() > 1.0:  # 8/16-bit integer PNGs come back unscaled from some readers
            img = img / (255.0 if img.max() <= 255 else 65535.0)
        side = img.shape[0]
        if img.shape != (side, side) or side % resolution:
            raise InputError(f"--images_dir={str(path)!r}: {f.name} is {img.shape[1]}x{img.shape[0]};"
                             f" images must be square with a side that is a multiple of "
                             f"--resolution={resolution}")
        if out and img.shape != out[0].shape:
            raise InputError(f"--images_dir={str(path)!r}: {f.name} is {img.shape[0]} px, "
                             f"{files[0].name} is {out[0].shape[0]} px; all must have one size")
        out.append(img)
    images = np.stack(out)
    f = images.shape[1] // resolution
    images = images.reshape(len(images), resolution, f, resolution, f).mean(axis=(2, 4))
    return (2.0 * images - 1.0).astype(np.float32)[..., None]


def save_png(path, image) -> None:
    """Write one (R, R[, 1]) image in [-1, 1] as an 8-bit grayscale PNG."""
    import matplotlib.image as mpimg

    img = np.clip((np.asarray(image).reshape(image.shape[0], image.shape[1]) + 1.0) / 2.0, 0, 1)
    mpimg.imsave(path, img, cmap="gray", vmin=0.0, vmax=1.0)
