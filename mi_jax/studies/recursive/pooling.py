"""The recursion's numbers: per-filter curves over seeds, the headline, the per-mode measure,
and pooling finished runs that differ only in seeds or filters (`--pool_from`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax import sweeps
from mi_jax import workdir as wd
from mi_jax.studies.recursive.config import Config, DatasetConfig, names
from mi_jax.validation import InputError


def seed_curves(result, which: str, key: str) -> dict:
    """Per filter, the (generation, seed) curve of metric `key` of the `which` candidates of a
    `recursive.RecursionResult`: per_seed, mean and sample std over seeds."""
    c = result.curve(key, which)  # (G, F, R)
    return {f: {"mean": c[:, i].mean(-1).tolist(), "std": sweeps.seed_std(c[:, i]).tolist(),
                "per_seed": c[:, i].tolist()} for i, f in enumerate(result.filters)}


def headline(curves: dict, metric: str, filters) -> dict:
    """The generated candidates' `metric`: the first filter at generation 0, every filter at the
    last generation (means over seeds)."""
    generated = curves["generated"][metric]
    return {"metric": metric, "first_generation": generated[filters[0]]["mean"][0],
            "last_generation": {f: generated[f]["mean"][-1] for f in filters}}


def min_mode_share(mode_mass, true_weights) -> np.ndarray:
    """Per model, the smallest per-mode in-support mass relative to the mode's true weight:
    mode_mass (models, modes), true_weights (modes,) -> (models,); 1 = every mode at its
    weight, 0 = a mode lost."""
    mass = np.asarray(mode_mass, np.float64)
    return np.min(mass / np.asarray(true_weights, np.float64), axis=-1)


# Settings that change how work is batched, not what is computed (float rounding at most), and
# the two axes a pool adds runs along.
POOL_FREE_KEYS = ("seeds", "filters") + DatasetConfig.EXECUTION


def _pool_dirs(text: str) -> list:
    dirs = names(text, "pool_from")
    if len(dirs) < 2:
        raise InputError(f"pool_from={text}: needs at least two work directories")
    return [Path(d) for d in dirs]


def pool_inputs(cfg: Config, name: str) -> list:
    """(label, dataset config, dataset metrics) of every finished run named by --pool_from."""
    runs = []
    for d in _pool_dirs(cfg.pool_from):
        sub = d / name
        try:
            saved = DatasetConfig.from_dict(wd.read_config(sub)).to_dict()  # defaults filled
            runs.append((str(d), saved, wd.read_json(sub / wd.METRICS_FILE)))
        except (TypeError, KeyError) as e:
            raise InputError(f"pool_from={cfg.pool_from}: {sub / wd.CONFIG_FILE} is not a "
                             f"recursive/{name} config ({type(e).__name__}: {e})") from None
        except (OSError, ValueError):
            raise InputError(f"pool_from={cfg.pool_from}: {d} holds no finished recursive/{name} "
                             f"run ({sub / wd.METRICS_FILE})") from None
    return runs


def pool_metrics(runs: list) -> dict:
    """Pool finished runs of one dataset that differ only in seeds, filters or batching.

    runs: (label, dataset config, dataset metrics) per run. Every (filter, seed) chain must come
    from one run only. Returns the dataset's metrics with curves pooled per filter: per_seed
    (generations, seeds of that filter), their mean and sample std, `filter_seeds` and, per
    chain, the run it came from (`sources`)."""
    label0, cfg0, m0 = runs[0]
    text = ",".join(label for label, _, _ in runs)
    fixed = lambda c: {k: v for k, v in c.items() if k not in POOL_FREE_KEYS}  # noqa: E731
    for label, cfg, m in runs[1:]:
        a, b = fixed(cfg0), fixed(cfg)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                raise InputError(f"pool_from={text}: the runs differ in {key} ({label0}: "
                                 f"{a.get(key)}, {label}: {b.get(key)})")
    whichs = [w for w in m0["curves"] if all(w in m["curves"] for _, _, m in runs)]
    keys = [n for n in m0["curves"]["generated"]
            if all(n in m["curves"][w] for _, _, m in runs for w in whichs)]
    filters, filter_seeds, sources = [], {}, {}
    columns = {}  # (which, name, filter) -> per-generation lists of per-seed values
    for label, _, m in runs:
        for f in m["filters"]:
            if f not in filters:
                filters.append(f)
                filter_seeds[f], sources[f] = [], []
            for j, seed in enumerate(m["seeds"]):
                if seed in filter_seeds[f]:
                    raise InputError(f"pool_from={text}: filter {f} seed {seed} is in "
                                     f"{sources[f][filter_seeds[f].index(seed)]} and {label}")
                filter_seeds[f].append(seed)
                sources[f].append(label)
                for w in whichs:
                    for n in keys:
                        per_seed = m["curves"][w][n][f]["per_seed"]
                        col = columns.setdefault((w, n, f), [[] for _ in per_seed])
                        for g, values in enumerate(per_seed):
                            col[g].append(values[j])
    curves = {w: {n: {} for n in keys} for w in whichs}
    for (w, n, f), per_seed in columns.items():
        c = np.asarray(per_seed, np.float64)  # (G, seeds of f)
        curves[w][n][f] = {"mean": c.mean(-1).tolist(), "std": sweeps.seed_std(c).tolist(),
                           "per_seed": c.tolist()}
    metric = m0["headline_metric"]
    seeds = sorted({s for f in filters for s in filter_seeds[f]})
    return {"experiment": "recursive", "dataset": m0["dataset"], "filters": filters,
            "seeds": seeds, "filter_seeds": filter_seeds, "sources": sources,
            "generations": m0["generations"], "num_train": m0["num_train"],
            "num_candidates": m0["num_candidates"], "num_keep": m0["num_keep"],
            "headline_metric": metric, "curves": curves, "info": m0["info"],
            "pooled_from": [label for label, _, _ in runs], "provenance": wd.provenance(),
            "headline": headline(curves, metric, filters)}
