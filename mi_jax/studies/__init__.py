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

`mixture_study` is the shared machinery of the mixture studies; `runner` runs studies by name.
"""
