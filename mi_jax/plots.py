"""Figures (matplotlib, Agg backend). Never imported by jitted code; every function draws on axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def norm_pdf(x, mean, std):
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.4, **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             **kw)
    return fig, axes


def density_1d(ax, hist_counts, edges, mixture, title: str, oracle_counts=None) -> None:
    """Log-scale density of generated samples (histogram) against the true mixture density."""
    widths = np.diff(edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    total = hist_counts.sum()
    dens = hist_counts / max(total, 1) / widths
    ax.step(centres, np.where(dens > 0, dens, np.nan), where="mid", color="tab:blue", lw=1.0,
            label="DDPM samples")
    if oracle_counts is not None:
        od = oracle_counts / max(oracle_counts.sum(), 1) / widths
        ax.step(centres, np.where(od > 0, od, np.nan), where="mid", color="tab:green", lw=0.8,
                alpha=0.8, label="exact-score sampler")
    grid = np.linspace(edges[0], edges[-1], 2000)
    means = np.asarray(mixture.means)[np.asarray(mixture.mask), 0]
    stds = np.asarray(mixture.stds)[np.asarray(mixture.mask)]
    weights = np.asarray(mixture.weights)[np.asarray(mixture.mask)]
    pdf = sum(w * norm_pdf(grid, m, s) for m, s, w in zip(means, stds, weights))
    ax.plot(grid, pdf, color="tab:red", lw=1.0, label="true density")
    ax.set_yscale("log")
    floor = 0.3 / max(total, 1) / widths.mean()
    top = 3 * max(pdf.max(), np.nanmax(np.where(dens > 0, dens, np.nan), initial=pdf.max()))
    ax.set_ylim(floor, top)
    ax.set_xlim(means.min() - 0.5, means.max() + 0.5)
    ax.set_xlabel("x")
    ax.set_ylabel("density (log)")
    ax.set_title(title, fontsize=9)


def rate_curve(ax, xs, mean, std, label: str, xlabel: str, oracle=None, logx=False) -> None:
    """Hallucination rate (%) with a +-1 std band over seeds, and the exact-score control."""
    xs, mean, std = (np.asarray(v, np.float64) for v in (xs, mean, std))
    ax.errorbar(xs, 100 * mean, yerr=100 * std, marker="o", capsize=3, label=label)
    if oracle is not None:
        ax.plot(xs, 100 * np.asarray(oracle, np.float64), ls="--", marker="x", color="tab:green",
                label="exact score")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("hallucination rate (%)")
    ax.grid(alpha=0.3)


# Colours of `support.classify` labels: in support, bridge (between two modes), blur.
LABEL_STYLE = ((0, "tab:blue", "in support"), (1, "tab:red", "bridge"), (2, "tab:purple", "blur"))


def _label_codes(labels) -> np.ndarray:
    """support.classify codes; a boolean `inside` array maps to in support (0) / bridge-coloured."""
    labels = np.asarray(labels)
    return np.where(labels, 0, 1) if labels.dtype == bool else labels


def scatter_2d(ax, x, mixture, labels, title: str, max_points: int = 20_000) -> None:
    """Samples over the mixture's modes (orange): `labels` is a boolean in-support array (blue /
    red = hallucinated) or `support.classify` codes (blue / red = bridge / purple = blur)."""
    x = np.asarray(x)[:max_points]
    codes = _label_codes(labels)[:max_points]
    boolean = np.asarray(labels).dtype == bool
    for code, color, name in LABEL_STYLE:
        sel = codes == code
        if boolean and code == 1:
            name = "hallucinated"
        ax.scatter(x[sel, 0], x[sel, 1], s=1 if code == 0 else 2, c=color,
                   alpha=0.3 if code == 0 else 0.6, lw=0, label=name)
    means = np.asarray(mixture.means)[np.asarray(mixture.mask)]
    # Hollow markers: the in-support samples under them stay visible.
    ax.scatter(means[:, 0], means[:, 1], s=30, facecolors="none", edgecolors="tab:orange",
               lw=0.8, marker="o", label="modes")
    lim = np.abs(means).max() * 1.35
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def loss_curves(ax, losses, labels, smooth: int = 50) -> None:
    for loss, label in zip(losses, labels):
        k = max(1, min(smooth, len(loss) // 10))
        ax.plot(np.convolve(loss, np.ones(k) / k, mode="valid"), lw=0.8, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("eps MSE")


def save_study_losses(study, path) -> None:
    """Training-loss curves of every model of a mixture study, one PNG."""
    from mi_jax.workdir import save_figure

    names = [c.name for c in study.grid.configs]
    fig, axes = figure()
    loss_curves(axes[0, 0], study.losses, [f"{names[c]} s{s}" for c, s in
                zip(study.grid.config_index, study.grid.model_seeds)])
    axes[0, 0].legend(fontsize=6)
    save_figure(fig, path)


def save_training_figures(study, workdir, curve_every: int, curve_samples: int) -> None:
    """A mixture study's `losses.png`, and `convergence.png` if it measured a curve."""
    save_study_losses(study, Path(workdir) / "losses.png")
    if study.convergence:
        save_convergence(study.convergence, Path(workdir) / "convergence.png",
                         f"every {curve_every} steps, {curve_samples} samples per model "
                         "(mean +- std over seeds)")


def variance_histogram(ax, hal, positive, title: str, bins: int = 60) -> None:
    """Trajectory variance of in-support vs hallucinated samples, log-spaced bins (paper Fig. 7).
    `positive`: boolean (hallucinated) or `support.classify` codes (bridges and blur apart)."""
    hal = np.asarray(hal, np.float64)
    good = np.isfinite(hal) & (hal > 0)
    lo, hi = np.log10(hal[good].min()), np.log10(hal[good].max())
    edges = np.logspace(lo, hi + 1e-9, bins + 1)
    if np.asarray(positive).dtype == bool:
        positive = np.asarray(positive)
        classes = ((good & ~positive, "tab:blue", "in support"),
                   (good & positive, "tab:red", "hallucinated"))
    else:
        classes = tuple((good & (np.asarray(positive) == code), color, name)
                        for code, color, name in LABEL_STYLE)
    for mask, color, name in classes:
        if np.any(mask):  # each class sums to 1 over the log-spaced bins
            ax.hist(hal[mask], bins=edges, alpha=0.6, color=color,
                    weights=np.full(int(mask.sum()), 1.0 / mask.sum()),
                    label=f"{name} ({int(mask.sum())})")
    ax.set_xscale("log")
    ax.set_xlabel("trajectory variance of x0_hat")
    ax.set_ylabel("fraction per bin")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def image_grid(ax, images, cols: int) -> None:
    """Images (n, H, W) in [-1, 1] tiled into one mosaic of `cols` columns on one axis."""
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    rows = -(-n // cols)
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), -1.0, np.float32)
    for i, img in enumerate(np.clip(images, -1, 1)):
        r, c = divmod(i, cols)
        mosaic[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img
    ax.imshow(mosaic, cmap="gray", vmin=-1, vmax=1)
    ax.axis("off")


def roc_panel(ax, scores: dict, positive, title: str,
              ylabel: str = "hallucinations flagged (TPR)") -> None:
    """ROC curves of several detectors ({name: (n,) scores}) against one label array; a
    non-finite score counts as the highest (flagged first), as in the detection metrics."""
    from mi_jax.detection import metrics as dm

    positive = np.asarray(positive, bool)
    big = np.finfo(np.float64).max
    if positive.any() and (~positive).any():
        for name, s in scores.items():
            s = np.nan_to_num(np.asarray(s, np.float64), nan=big, posinf=big)
            fpr, tpr, _ = dm.roc_curve(s, positive)
            ax.plot(fpr, tpr, lw=1, label=f"{name} ({dm.auroc(s, positive):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
    ax.set_xlabel("in-support flagged (FPR)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="lower right")


CONVERGENCE_PANELS = (("bridge", "bridge rate", True), ("blur", "blur rate", True),
                      ("width_vs_exact", "mode width / exact score's", False),
                      ("bridges_auroc", "AUROC vs bridges", False))


def save_convergence(summary: dict, path, title: str = "") -> None:
    """The convergence curve of a study (`convergence_summary`): one panel per quantity,
    one line (mean +- std over seeds) per configuration."""
    from mi_jax import workdir as wd

    fig, axes = figure(ncols=len(CONVERGENCE_PANELS), width=3.4, height=2.8)
    for ax, (key, label, log) in zip(axes[0], CONVERGENCE_PANELS):
        for name, entry in summary.items():
            ax.errorbar(entry["steps"], entry[key]["mean"], yerr=entry[key]["std"], capsize=2,
                        marker="o", ms=3, label=name)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=9)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping labels
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9, y=1.03)
    wd.save_figure(fig, path)
