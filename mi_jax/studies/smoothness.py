r"""Mitigation in training (beyond the paper): objectives that make the learned denoiser switch
between modes as sharply as the exact one, on the 25-mode grids.

The paper traces mode interpolation to a network that learns a smooth version of a score that is
nearly discontinuous between modes. Two added terms (`mi_jax.diffusion.forward`), each an arm
`term:weight` of `--arms`, against the plain objective (the gmm2d preset; every other gmm2d flag
applies to all arms):

- jacobian: second-order denoising (`eps_loss(jacobian_weight=...)`; Tweedie's second-order
  identity b d eps*/dx_t = I - Cov[eps | x_t]) gives, from data alone, a regression target for
  the network's Jacobian that is large where the posterior over modes is split; like the plain
  loss it only supervises where noised data lands.
- between: the network's x0_hat at noised points on segments between two training points (t <
  --between_t_max) regressed on the minibatch's closed-form denoiser (`between_loss`), i.e.
  supervision where p_t has no mass and the plain loss lets the network extrapolate.

Reported per layout and arm (mean +- std over seeds):

- bridge / blur / hallucination rate, modes covered and the mode-mass KL of the gmm2d samples;
- the held-out plain epsilon loss on fresh data (the objective every arm is judged by; the exact
  denoiser's value is its floor);
- how sharp the learned x0_hat(x_t) is between modes, measured against the exact one: the share
  of x_t ~ p_t whose x0_hat lands outside every k-sigma ball (the mass the sampler turns into
  hallucinations), and the slope of x0_hat along each neighbour pair at the pair's noised midpoint.

Every arm is a gmm2d work directory under the study's (`plain/`, `<term>_<weight>/`); an
interrupted study resumes arm by arm.

Command line: `python -m experiments.smoothness` (every flag and preset: `--help`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import config, plots, sweeps
from mi_jax import workdir as wd
from mi_jax.data import support
from mi_jax.diffusion.forward import eps_loss, predict_x0, q_sample
from mi_jax.diffusion.oracle import oracle_eps, oracle_x0
from mi_jax.evaluation.mixture import mode_quality
from mi_jax.studies import gmm2d, mixture_models
from mi_jax.validation import InputError

PHASE_HELDOUT = 8

_TERM_FIELDS = ("jacobian_weight", "jacobian_t_max", "between_weight", "between_t_max")
TERMS = {"jacobian": "jacobian_weight", "between": "between_weight"}

OPTIONS = tuple(o for o in gmm2d.OPTIONS if o.name not in ("jacobian_weight", "between_weight")) + (
    config.Option("arms", "str", "Comma-separated penalised arms term:weight, term one of "
                  "jacobian (second-order denoising) or between (the minibatch denoiser between "
                  "training points); the plain arm always runs. --jacobian_t_max / "
                  "--between_t_max apply to every arm of that term."),
    config.Option("timesteps", "ints", "Timesteps at which the sharpness of x0_hat is measured.",
                  low=0),
    config.Option("heldout_samples", "int", "Fresh data points for the held-out loss and the "
                  "sharpness estimates (per model and timestep).", low=1000),
)
Config = config.config_class("SmoothnessConfig", OPTIONS)

_OWN = dict(arms="jacobian:1,between:10", timesteps=[2, 5, 10, 20], heldout_samples=100_000)
PRESETS = {name: dict(values, **_OWN) for name, values in gmm2d.PRESETS.items()}
ARM_METRICS = ("bridge", "blur", "hallucinated", "modes_covered", "mass_kl", "heldout_loss")
LOSS_CHUNK = 20_000


def parse_arms(text: str) -> list:
    """[(name, term, weight)] of the plain arm and every `--arms` entry."""
    arms, seen = [("plain", None, 0.0)], set()
    for item in (x.strip() for x in text.split(",") if x.strip()):
        term, _, raw = item.partition(":")
        try:
            weight = float(raw)
        except ValueError:
            weight = float("nan")
        if term not in TERMS or not weight > 0 or item in seen:
            raise InputError(f"arms={text}: {item!r} is not a new term:weight with term in "
                             f"{', '.join(TERMS)} and weight > 0")
        seen.add(item)
        arms.append((f"{term}_{weight:g}", term, weight))
    return arms


def validate(cfg: Config) -> None:
    for t in cfg.timesteps:
        if t >= cfg.T:
            raise InputError(f"timesteps={','.join(map(str, cfg.timesteps))}: must lie inside "
                             f"[0, T={cfg.T})")
    for _, term, weight in parse_arms(cfg.arms):
        gmm2d.validate(arm_config(cfg, term, weight))


def arm_config(cfg: Config, term: str | None, weight: float):
    """The gmm2d config of one arm: every gmm2d field of `cfg` and the arm's own term and weight
    (the plain arm sets none of the terms' fields, so it equals an ordinary gmm2d run's
    config)."""
    names = {o.name for o in config.options_of(gmm2d.Config)}
    values = {k: v for k, v in cfg.to_dict().items() if k in names and k not in _TERM_FIELDS}
    if term is not None:
        values[TERMS[term]] = weight
        t_max = getattr(cfg, TERMS[term].replace("weight", "t_max"))
        if t_max is not None:
            values[TERMS[term].replace("weight", "t_max")] = t_max
    return config.from_values(gmm2d.Config, values)


def _run_arm(arm_cfg, workdir: Path, log) -> None:
    if wd.finished(workdir, arm_cfg):
        log(f"[smoothness] {workdir}: finished result found, not re-run")
        return
    log(f"[smoothness] training arm {workdir.name}")
    gmm2d.run(arm_cfg, wd.prepare(workdir, arm_cfg), log=log)


def heldout_loss(eps_fn, schedule, mixture, key, num: int) -> float:
    """The plain epsilon loss (uniform t) on `num` fresh draws of the mixture, in chunks of at
    most LOSS_CHUNK (`num` rounded down to whole chunks)."""
    size = min(num, LOSS_CHUNK)
    loss = jax.jit(lambda k: eps_loss(eps_fn, schedule,
                                      mixture.sample(jax.random.fold_in(k, 0), size),
                                      jax.random.fold_in(k, 1)))
    return float(np.mean([float(loss(jax.random.fold_in(key, i))) for i in range(num // size)]))


def _x0_fn(eps_fn, schedule):
    return lambda x, t: predict_x0(schedule, x, t, eps_fn(x, t))


def between_mass(x0_fn, schedule, mixture, key, t: int, num: int, k: float) -> float:
    """Share of x_t ~ p_t (fresh data noised to t) whose x0_hat lies outside every k-sigma ball."""
    x0 = mixture.sample(jax.random.fold_in(key, 0), num)
    tt = jnp.full((num,), t, jnp.int32)
    x_t = q_sample(schedule, x0, tt, jax.random.normal(jax.random.fold_in(key, 1), x0.shape))
    return float(1.0 - jnp.mean(support.in_support(x0_fn(x_t, tt), mixture, k)))


def midpoint_slopes(x0_fn, schedule, mixture, t: int) -> np.ndarray:
    """Per neighbour pair (a, b): u . d x0_hat/dx_t . u at x_t = sqrt(abar_t) (a + b) / 2,
    u = (b - a) / |b - a| (how fast x0_hat switches from a to b; a vector-Jacobian product, so
    any network's custom-VJP layers work)."""
    means = np.asarray(mixture.means, np.float64)[np.asarray(mixture.mask)]
    pairs = support.neighbour_pairs(mixture)
    u = means[pairs[:, 1]] - means[pairs[:, 0]]
    u = jnp.asarray(u / np.linalg.norm(u, axis=1, keepdims=True), jnp.float32)
    a = schedule.sqrt_alphas_bar[t]
    mid = jnp.asarray((means[pairs[:, 0]] + means[pairs[:, 1]]) / 2, jnp.float32) * a
    tt = jnp.full((len(pairs),), t, jnp.int32)
    _, pullback = jax.vjp(lambda x: x0_fn(x, tt), mid)
    return np.asarray(jnp.sum(pullback(u)[0] * u, axis=1))


def sharpness(x0_fn, schedule, mixture, key, cfg: Config) -> dict:
    """between-mode mass and median midpoint slope per timestep, {str(t): {...}}."""
    return {str(t): {"between_mass": between_mass(x0_fn, schedule, mixture,
                                                  jax.random.fold_in(key, t), t,
                                                  cfg.heldout_samples, cfg.k),
                     "midpoint_slope": float(np.median(midpoint_slopes(x0_fn, schedule,
                                                                       mixture, t)))}
            for t in cfg.timesteps}


def evaluate_arm(workdir: Path, cfg: Config, log=print) -> dict:
    """Per layout: one row per model of the arm in `workdir` (seed, rates, loss, sharpness)."""
    models = mixture_models.load_models(workdir)
    grid, schedule = models.grid, models.schedule
    with np.load(workdir / "arrays.npz") as z:
        samples = z["samples"]
    rows: dict = {}
    for m in range(grid.num_models):
        c = int(grid.config_index[m])
        conf = grid.configs[c]
        key = jax.random.fold_in(jax.random.key(PHASE_HELDOUT), c)  # same data for every arm
        eps_fn = models.network.eps_fn(jax.tree.map(lambda v: v[m], models.params))
        row = {"seed": int(grid.model_seeds[m]), **mode_quality(samples[m], conf.mixture, cfg.k),
               "heldout_loss": heldout_loss(eps_fn, schedule, conf.mixture, key,
                                            cfg.heldout_samples),
               "sharpness": sharpness(_x0_fn(eps_fn, schedule), schedule, conf.mixture, key, cfg)}
        log(f"  {workdir.name} {conf.name} seed {row['seed']}: bridge {100 * row['bridge']:.2f} %,"
            f" modes {row['modes_covered']}, held-out loss {row['heldout_loss']:.5f}")
        rows.setdefault(conf.name, []).append(row)
    return rows


def exact_reference(cfg: Config, configs, schedule) -> dict:
    """The exact denoiser's held-out loss (the floor) and sharpness, per layout."""
    out = {}
    for c, conf in enumerate(configs):
        key = jax.random.fold_in(jax.random.key(PHASE_HELDOUT), c)
        eps_fn = oracle_eps(conf.mixture, schedule)
        out[conf.name] = {"heldout_loss": heldout_loss(eps_fn, schedule, conf.mixture, key,
                                                       cfg.heldout_samples),
                          "sharpness": sharpness(oracle_x0(conf.mixture, schedule), schedule,
                                                 conf.mixture, key, cfg)}
    return out


def summarise(rows: list, timesteps) -> dict:
    """Mean +- std over seeds of every per-model metric of one arm and layout."""
    out = {key: sweeps.seed_summary([r[key] for r in rows]) for key in ARM_METRICS}
    for t in map(str, timesteps):
        for key in ("between_mass", "midpoint_slope"):
            out[f"{key}_t{t}"] = sweeps.seed_summary([r["sharpness"][t][key] for r in rows])
    return out


def headline(table: dict, reference: dict, num_modes: dict) -> dict:
    """Per layout: the penalised arm with the lowest mean bridge rate among those whose held-out
    loss is within 5 % of plain and whose every model keeps every mode; the target (>= 50 % less
    bridge mass) is judged on it."""
    out = {}
    for name, arms in table.items():
        plain = arms["plain"]
        ok = [a for a, v in arms.items() if a != "plain"
              and v["heldout_loss"]["mean"] <= 1.05 * plain["heldout_loss"]["mean"]
              and v["modes_covered"]["min"] >= num_modes[name]]
        best = min(ok, key=lambda a: arms[a]["bridge"]["mean"]) if ok else None
        row = {"plain_bridge": plain["bridge"]["mean"], "best_arm": best,
               "loss_floor": reference[name]["heldout_loss"]}
        if best:
            v = arms[best]
            row.update(best_bridge=v["bridge"]["mean"],
                       bridge_reduction=1.0 - v["bridge"]["mean"] / max(plain["bridge"]["mean"],
                                                                        1e-12),
                       loss_increase=v["heldout_loss"]["mean"] / plain["heldout_loss"]["mean"] - 1,
                       target_met=bool(v["bridge"]["mean"] <= 0.5 * plain["bridge"]["mean"]))
        else:
            row["target_met"] = False
        out[name] = row
    return out


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    workdir = Path(workdir)
    arms = parse_arms(cfg.arms)
    for name, term, weight in arms:
        _run_arm(arm_config(cfg, term, weight), workdir / name, log)
    names = [a[0] for a in arms]
    per_arm = {name: evaluate_arm(workdir / name, cfg, log) for name in names}
    plain = mixture_models.load_models(workdir / "plain")
    configs = plain.grid.configs
    reference = exact_reference(cfg, configs, plain.schedule)
    table = {conf.name: {arm: summarise(rows[conf.name], cfg.timesteps)
                         for arm, rows in per_arm.items()} for conf in configs}
    num_modes = {conf.name: int(np.sum(np.asarray(conf.mixture.mask))) for conf in configs}
    text = table_markdown(table, reference, cfg.timesteps)
    wd.write_text(workdir / "table.md", text)
    log(text)
    figures = [_figure(workdir, table, names), _profiles(workdir, names, cfg)]
    metrics = {"experiment": "smoothness", "arms": names, "table": table,
               "exact": reference, "models": per_arm,
               "headline": headline(table, reference, num_modes), "figures": figures,
               "provenance": wd.provenance()}
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    return metrics


def _pm(v: dict, scale: float, digits: int) -> str:
    std = v["std"]
    text = f"{v['mean'] * scale:.{digits}f}"
    return text if std is None or not np.isfinite(std) else text + f" +- {std * scale:.{digits}f}"


def table_markdown(table: dict, reference: dict, timesteps) -> str:
    lines = ["| layout | arm | bridge % | blur % | hallucinated % | modes covered (min) | mass KL | "
             "held-out loss |", "|---|---|---|---|---|---|---|---|"]
    for name, arms in table.items():
        for arm, v in arms.items():
            lines.append(f"| {name} | {arm} | {_pm(v['bridge'], 100, 2)} | {_pm(v['blur'], 100, 2)}"
                         f" | {_pm(v['hallucinated'], 100, 2)} | {v['modes_covered']['min']:.0f} | "
                         f"{_pm(v['mass_kl'], 1, 4)} | {_pm(v['heldout_loss'], 1, 5)} |")
        lines.append(f"| {name} | exact denoiser | - | - | - | - | - | "
                     f"{reference[name]['heldout_loss']:.5f} |")
    ts = [str(t) for t in timesteps]
    lines += ["", "x0_hat between modes: share of x_t ~ p_t mapped outside every k-sigma ball, % "
              "(median midpoint slope along neighbour pairs)", "",
              "| layout | arm | " + " | ".join(f"t={t}" for t in ts) + " |",
              "|---|---|" + "---|" * len(ts)]
    for name, arms in table.items():
        for arm, v in arms.items():
            cells = [f"{100 * v[f'between_mass_t{t}']['mean']:.3f} "
                     f"({v[f'midpoint_slope_t{t}']['mean']:.2f})" for t in ts]
            lines.append(f"| {name} | {arm} | " + " | ".join(cells) + " |")
        ref = reference[name]["sharpness"]
        cells = [f"{100 * ref[t]['between_mass']:.3f} ({ref[t]['midpoint_slope']:.2f})" for t in ts]
        lines.append(f"| {name} | exact denoiser | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure(workdir: Path, table: dict, names) -> str:
    fig, axes = plots.figure(ncols=len(table), width=5.0, height=3.6, layout="constrained")
    pos = np.arange(len(names))
    for ax, (name, arms) in zip(axes[0], table.items()):
        vals = [arms[n] for n in names]
        ax.errorbar(pos, [100 * v["bridge"]["mean"] for v in vals],
                    yerr=[100 * np.nan_to_num(v["bridge"]["std"] or 0.0) for v in vals],
                    marker="o", capsize=3, color="tab:red", label="bridge %")
        ax.set_ylabel("bridge rate %", color="tab:red")
        ax.set_xticks(pos, names, rotation=20, fontsize=7)
        twin = ax.twinx()
        base = vals[0]["heldout_loss"]["mean"]
        twin.plot(pos, [100 * (v["heldout_loss"]["mean"] / base - 1) for v in vals], "s--",
                  color="tab:blue")
        twin.axhline(5, color="tab:blue", lw=0.6, ls=":")
        twin.set_ylabel("held-out loss vs plain, %", color="tab:blue")
        ax.set_title(f"{name} grid (mean +- std over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    wd.save_figure(fig, workdir / "smoothness.png")
    return "smoothness.png"


def _profiles(workdir: Path, names, cfg: Config) -> str:
    """x0_hat along the central neighbour pair's segment (projection on it, 0 = mode a, 1 = mode
    b) at the smallest and largest timestep: exact vs each arm's first model."""
    arms = {n: mixture_models.load_models(workdir / n) for n in names}
    first = next(iter(arms.values()))
    configs, schedule = first.grid.configs, first.schedule
    ts = sorted({min(cfg.timesteps), max(cfg.timesteps)})
    fig, axes = plots.figure(ncols=len(ts), nrows=len(configs), width=4.2, height=3.3,
                             layout="constrained")
    lam = np.linspace(-0.25, 1.25, 301)
    for c, conf in enumerate(configs):
        means = np.asarray(conf.mixture.means, np.float64)[np.asarray(conf.mixture.mask)]
        pairs = support.neighbour_pairs(conf.mixture)
        centre = np.argmin(np.linalg.norm((means[pairs[:, 0]] + means[pairs[:, 1]]) / 2, axis=1))
        a_mode, b_mode = means[pairs[centre, 0]], means[pairs[centre, 1]]
        seg = b_mode - a_mode
        for j, t in enumerate(ts):
            ax = axes[c, j]
            x = jnp.asarray((a_mode + lam[:, None] * seg) * float(schedule.sqrt_alphas_bar[t]),
                            jnp.float32)
            tt = jnp.full((len(lam),), t, jnp.int32)

            def proj(x0):
                return (np.asarray(x0, np.float64) - a_mode) @ seg / (seg @ seg)

            ax.plot(lam, proj(oracle_x0(conf.mixture, schedule)(x, tt)), color="k", lw=1.2,
                    label="exact E[x0|x_t]")
            for name, models in arms.items():
                m = int(np.flatnonzero(models.grid.config_index == c)[0])
                eps_fn = models.network.eps_fn(jax.tree.map(lambda v: v[m], models.params))
                ax.plot(lam, proj(_x0_fn(eps_fn, schedule)(x, tt)), lw=1, label=name)
            ax.set_title(f"{conf.name}, t={t}: x0_hat along a neighbour pair", fontsize=8)
            ax.set_xlabel("x_t / sqrt(abar_t) on the segment (0: a, 1: b)", fontsize=8)
            ax.set_ylabel("x0_hat projected", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    wd.save_figure(fig, workdir / "profiles.png")
    return "profiles.png"
