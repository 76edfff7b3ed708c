"""The main job's report: `summary.md` from the headline numbers of finished experiments.

`summary_markdown(results, preset, ledger_rows)` renders the claims ledger (see `mi_jax.ledger`)
and one section per experiment; every number comes from the experiments' `headline` dicts.
A spread over a single seed is shown as "(1 seed)", never as "+- 0".
"""

from __future__ import annotations

import math

from mi_jax import ledger


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _undefined(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pm(mean, std, fmt=_pct) -> str:
    """'mean +- std', or 'mean (1 seed)' when the spread is undefined (None / NaN)."""
    return f"{fmt(mean)} (1 seed)" if _undefined(std) else f"{fmt(mean)} +- {fmt(std)}"


def _bridge_windows(h: dict) -> str:
    if not h.get("bridges_best_window"):
        return "n/a"
    lo, hi = h["bridges_best_window"]
    return (f"{pm(*h['bridges_official_window_auroc'], _auroc)}; {lo}:{hi} "
            f"({pm(*h['bridges_best_window_auroc'], _auroc)}, "
            f"{pm(*h['bridges_best_window_removed_at_96_kept'])})")


def _auroc(v) -> str:
    return "n/a" if _undefined(v) else f"{v:.3f}"


def _detection_lines(detection: dict) -> list:
    """The trajectory variance (official window) as a detector: paper claim >95% removed at 96% kept."""
    lines = ["", "Trajectory variance as a hallucination detector (mean +- std over seeds; the paper "
             "reports >95% of hallucinations removed while 96% of in-support samples are kept):", "",
             "| configuration | AUROC | removed at 96% kept | kept at 95% removed |", "|---|---|---|---|"]
    for name, d in detection.items():
        (a, sa), (r, sr), (k, sk) = d["auroc"], d["removed_at_96_kept"], d["kept_at_95_removed"]
        lines.append(f"| {name} | {pm(a, sa, _auroc)} | {pm(r, sr)} | {pm(k, sk)} |")
    return lines


def summary_markdown(results: dict, preset: str, ledger_rows: list | None = None) -> str:
    lines = [f"# mi_jax reproduction summary ({preset} preset)", ""]
    if ledger_rows is not None:
        lines += ["## Claims ledger", "", "Each claim of the paper, the value measured by this job "
                  "and a verdict computed from it (rule below the table).", "",
                  ledger.ledger_markdown(ledger_rows), ""]
    if "gmm1d" in results:
        m = results["gmm1d"]
        h = m["headline"]
        lines += ["## 1D Gaussian mixtures (paper Fig. 2, Appendix C)", "",
                  f"Hallucination = farther than k={h['k']:g} mode stds from every mode. "
                  "Mean +- std over seeds; the exact-score sampler is the control.", "",
                  "| configuration | DDPM | exact score |", "|---|---|---|"]
        for name, (mean, std) in h["fig2_rate_mean_std"].items():
            lines.append(f"| {name} | {pm(mean, std)} | {_pct(h['fig2_oracle_rate'][name])} |")
        lines += ["", "| training-set size | rate |", "|---|---|"]
        lines += [f"| {n} | {pm(*v)} |" for n, v in h["rate_vs_num_train"].items()]
        lines += ["", "| mode spacing | rate |", "|---|---|"]
        lines += [f"| {d} | {pm(*v)} |" for d, v in h["rate_vs_separation"].items()]
        lines += _detection_lines(h["detection"])
        lines += ["", "![Fig. 2](gmm1d/fig2_density.png)", "", "![sweeps](gmm1d/sweeps.png)", "",
                  "![Appendix C](gmm1d/appendix_c_density.png)", "",
                  "![Fig. 7 (1D)](gmm1d/fig7_variance.png)", ""]
    if "gmm2d" in results:
        h = results["gmm2d"]["headline"]
        lines += ["## 2D grids (paper Fig. 3)", "",
                  "| layout | DDPM rate | exact score | on nearest-neighbour pairs | on x-axis pairs |",
                  "|---|---|---|---|---|"]
        for name, (mean, std) in h["rate_mean_std"].items():
            lines.append(f"| {name} | {pm(mean, std)} | {_pct(h['oracle_rate'][name])} | "
                         f"{_pct(h['nearest_neighbour_share'][name])} | {_pct(h['x_axis_share'][name])} |")
        lines += _detection_lines(h["detection"])
        lines += ["", "![Fig. 3](gmm2d/fig3_scatter.png)", "",
                  "![Fig. 7 (2D)](gmm2d/fig7_variance.png)", ""]
    if "detection" in results:
        lines += ["## Detection (paper Fig. 7, the 95 % / 96 % claim)", "",
                  "Fresh samples from the models above. AUROC per detector, mean +- std over "
                  "seeds (window [0, 10) = the official filter); the best trajectory-variance window "
                  "of the sweep; the calibrated filter (threshold = 96 % quantile of the exact-score "
                  "sampler's in-support variance); pre-emptive stopping.", "",
                  "| configuration | x0 var | x_t var | eps var | final eps norm | FLIPD LID | random "
                  "| best window (AUROC, removed at 96 % kept) | rate before -> after filter (kept) "
                  "| pre-emptive: hallucinations flagged, steps saved | bridges vs in-support: "
                  "official window AUROC; best window (AUROC, removed at 96 % kept) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, h in results["detection"]["headline"].items():
            cells = [_auroc(h[f"{d}_auroc"][0]) for d in
                     ("var_x0", "var_xt", "var_eps", "eps_norm_last", "flipd", "random")]
            lines.append(
                f"| {name} | " + " | ".join(cells) +
                f" | {h['best_window'][0]}:{h['best_window'][1]} ({_auroc(h['best_window_auroc'])}, "
                f"{_pct(h['best_window_removed_at_96_kept'])}) | {_pct(h['rate_before'])} -> "
                f"{_pct(h['rate_after_calibrated_filter'])} ({_pct(h['kept_by_calibrated_filter'])}) "
                f"| {_pct(h['preemptive_hallucinations_flagged'])}, "
                f"{_pct(h['preemptive_steps_saved'])} | {_bridge_windows(h)} |")
        lines += [""] + [f"![ROC and windows]({'detection/' + p})" for p in
                         sorted(results["detection"].get("figures", []))] + [""]
    if "score_analysis" in results:
        h = results["score_analysis"]["headline"]
        lines += ["## Mechanism: exact vs learned x0_hat (paper Fig. 4)", "",
                  "Per gap between neighbouring modes (mean over gaps and seeds): the steepest slope "
                  "of x0_hat(x_t), and the probability mass under the exact noised marginal of the "
                  "x_t whose x0_hat lands between modes.", "",
                  "| t | max slope exact | max slope learned | mass mapped between, exact | learned |",
                  "|---|---|---|---|---|"]
        for src in h.values():
            for t, v in sorted(src.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
                if "max_slope_exact" in v:
                    lines.append(f"| {t} | {v['max_slope_exact']:.2f} | {v['max_slope_learned']:.2f} | "
                                 f"{_pct(v['between_mass_exact'])} | {_pct(v['between_mass_learned'])} |")
                else:
                    lines.append(f"| 2D {t} (t={v['t']}) | | | "
                                 f"{_pct(v['mass_mapped_between_modes_exact'])} | "
                                 f"{_pct(v['mass_mapped_between_modes_learned'])} |")
        lines += ["", "![Fig. 4](score_analysis/fig4_gmm1d.png)", "",
                  "![Fig. 4, 2D](score_analysis/fig4_gmm2d.png)", ""]
    if "trajectories" in results:
        lines += ["## Trajectories (paper Fig. 6)", "",
                  "![Fig. 6, 1D](trajectories/fig6_gmm1d.png)", "",
                  "![Fig. 6, 2D](trajectories/fig6_gmm2d.png)", ""]
    if "ablations" in results:
        h = results["ablations"]["headline"]
        lines += ["## Sampler and training ablations (paper Fig. 11)", "",
                  "| configuration | sampler | trained net | exact score |", "|---|---|---|---|"]
        for conf, variants in h["samplers"].items():
            for v, (mean, std, exact) in variants.items():
                lines.append(f"| {conf} | {v} | {pm(mean, std)} | {_pct(exact)} |")
        if "imbalanced" in h:
            i = h["imbalanced"]
            lines += ["", f"Imbalanced grid: rate {pm(*i['rate'])} "
                      f"(exact score {_pct(i['oracle_rate'])}); correlation of generated mode shares "
                      f"with the true weights, per seed: "
                      + ", ".join(f"{c:.2f}" for c in i["mode_share_vs_weight_corr"])]
        if "training_length" in h:
            lines += ["", "Rate vs training steps: " + ", ".join(
                f"{s}: {_pct(v[0])}" for s, v in h["training_length"].items())]
        lines += ["", "![Fig. 11](ablations/fig11_ablations.png)", ""]
    if "shapes" in results:
        h = results["shapes"]["headline"]
        lines += [f"## SIMPLE SHAPES (paper Figs. 1, 5, 7; {h['resolution']}x{h['resolution']}, "
                  f"seeds {h['seeds']})", ""]
        if "hallucination_rate" in h:
            rate = h["hallucination_rate"]
            lines += [f"Hallucinated: {pm(*rate)} of {h['num_images']} images;"
                      " by category: " + ", ".join(f"{c} {n}" for c, n in
                                                   h["count_by_category"].items())
                      + f". Counter accuracy on hand-made examples: {_pct(h['counter_accuracy'])}.",
                      "", "| variance | AUROC | hallucinations removed at 96% kept |",
                      "|---|---|---|"]
            for name in ("whole_image", "column_max", "square_column"):
                if f"{name}_auroc" in h:
                    lines.append(f"| {name} | {h[f'{name}_auroc']:.3f} | "
                                 f"{_pct(h[f'{name}_removed_at_96_kept'])} |")
        lines += ["", "![samples](shapes/fig5_samples.png)", "",
                  "![Fig. 7 (shapes)](shapes/fig7_variance.png)", "",
                  "![bottleneck](shapes/embedding_bottleneck.png)", ""]
    if "shapes_detection" in results:
        lines += ["## SIMPLE SHAPES: detection by kind of hallucination (paper Fig. 7)", "",
                  "Fresh samples of the models above; windows in training-schedule timesteps, the "
                  "last 50 sampled step by step. AUROC pooled over seeds (per seed in "
                  "`shapes_detection/metrics.json`).", "",
                  "| region | window | duplicates vs in-support | removed at 96 % kept | empty | "
                  "malformed | all |", "|---|---|---|---|---|---|---|"]
        for h in results["shapes_detection"]["headline"].values():
            # A region x window row has a window; composition, held-out and controls do not.
            for key, row in h.items():
                if not (isinstance(row, dict) and "window" in row):
                    continue
                lines.append(f"| {key} | {row['window']} | {_auroc(row['duplicate_auroc'])} | "
                             f"{_pct(row['duplicate_removed_at_96_kept'])} | "
                             f"{_auroc(row['empty_auroc'])} | {_auroc(row['malformed_auroc'])} | "
                             f"{_auroc(row['all_auroc'])} |")
            lines += ["", "Composition: " + ", ".join(f"{k} {_pct(v)}"
                                                     for k, v in h["composition"].items())]
            held = h.get("heldout_best", {})
            if held:
                lines += ["", "Best window chosen on the even-numbered images, AUROC on the "
                          "odd-numbered ones (duplicates vs in-support): " + ", ".join(
                              f"{region} {_auroc(r['test_auroc'])} at t in "
                              f"[{r['window'][0]}, {r['window'][1]})"
                              for region, r in held.items())]
        lines += ["", "![windows](shapes_detection/windows_shapes.png)", "",
                  "![samples](shapes_detection/samples_shapes.png)", ""]
    if "recursive" in results:
        lines += _recursive_lines(results["recursive"])
    return "\n".join(lines) + "\n"


def _recursive_lines(metrics: dict) -> list:
    lines = ["## Recursive retraining on own samples (paper Fig. 8)", "",
             "Each generation trains fresh models only on the previous generation's kept samples "
             "(no filter / random subset / lowest trajectory variance); mean +- std over seeds of "
             "the generated candidates.", ""]
    for name, res in metrics["results"].items():
        metric = metrics["headline"][name]["metric"]
        curves = res["curves"]["generated"][metric]
        filters = list(curves)
        fmt = _pct if metric == "hallucination_rate" else (lambda v: f"{v:.2f}")
        label = "hallucinated" if metric == "hallucination_rate" else "Frechet distance"
        lines += [f"**{name}** ({label}; {res['info'].get('source', '')})", "",
                  "| generation | " + " | ".join(filters) + " |",
                  "|---|" + "---|" * len(filters)]
        for g in range(len(curves[filters[0]]["mean"])):
            lines.append(f"| {g} | " + " | ".join(
                pm(curves[f]['mean'][g], curves[f]['std'][g], fmt) for f in filters) + " |")
        lines += ["", f"![generations](recursive/{name}/generations.png)", ""]
    lines += ["![Fig. 8](recursive/fig8_recursive.png)", ""]
    return lines
