"""The paper's studies as library functions: one module per study, each with

    Config    a frozen dataclass of its options (`mi_jax.config`),
    PRESETS   {"quick": {...}, "paper": {...}}: presets as data,
    validate  cross-field checks (raise InputError before any work),
    run       run(cfg, workdir, log=print) -> metrics (writes config, arrays, figures, metrics).

`experiments.<name>` only wires a study to absl flags (`mi_jax.cli.main`). From Python:

    from mi_jax import config
    from mi_jax.studies import gmm1d
    cfg = config.preset(gmm1d.Config, gmm1d.PRESETS, "quick", seeds=(0,), steps=200)
    gmm1d.validate(cfg); metrics = gmm1d.run(cfg, workdir)   # or runner.run_or_reuse(...)

The studies of the main job also export `STUDY` (`registry.Study`): the studies whose models it
analyses, its metrics schema, its section of summary.md and its claims-ledger rows.
`mixture_study` is the shared machinery of the mixture studies, `mixture_models` loads their
trained models, `runner` runs studies by name and the main job, `registry` lists the main job.
"""
