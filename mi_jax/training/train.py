"""Epsilon-prediction training: a pure train step, scanned in chunks, looped over models.

One model and a grid of models run the same code: `stacked=True` runs the chunk over a leading
model axis of the state, the data and `n_valid`, so a whole sweep trains in one jitted call per
chunk; how it loops over the models (vmap, `lax.map`) is chosen from the backend (`train_loop`). Training sets of different sizes share one padded array; minibatches are drawn i.i.d.
(with replacement) from the first `n_valid` rows, so the size is a value, not a shape.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mi_jax.diffusion.forward import between_loss, eps_loss, focused_timesteps
from mi_jax.diffusion.schedule import Schedule
from mi_jax.sharding import to_host
from mi_jax.validation import (InputError, check, check_float, check_int, check_key,
                               is_concrete)


DEFAULT_BETWEEN_T_MAX = 50  # the between-points term's timesteps, t < this


class TrainState(NamedTuple):
    """A model's training state (a pytree; stack it for a sweep): params, optax state, step,
    key (step keys are fold_in(key, step)) and the EMA of the params (None without one)."""

    params: Any
    opt_state: Any
    step: jax.Array  # int32 scalar (per model)
    key: jax.Array   # typed key; step keys are fold_in(key, step)
    ema: Any = None  # exponential moving average of params (TrainConfig.ema_decay > 0), else None

    @property
    def eval_params(self):
        """The params to sample with: the moving average when training keeps one."""
        return self.params if self.ema is None else self.ema


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static training options (a jit static argument). Defaults: the official toy settings."""

    batch_size: int = 10_000
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": decays to 0 at step `decay_steps`
    decay_steps: int = 0
    # Importance-weighted timesteps (same objective, less variance at small t): a fraction
    # `focus_prob` of t is drawn from [0, focus_steps); 0 = uniform t, as the official code.
    focus_steps: int = 0
    focus_prob: float = 0.5
    ema_decay: float = 0.0  # > 0: keep an EMA of the params (TrainState.ema) to sample with
    warmup_steps: int = 0  # > 0: the learning rate ramps linearly from 0 over these steps
    batch_order: str = "random"  # or "in_order": the official fixed-order, unshuffled batches
    # > 0: a model stops updating after `epochs` x (n_valid // batch_size) steps, the official
    # budget (10 000 epochs: steps grow with the training set); 0: every model runs all steps.
    epochs: int = 0
    # > 0: add this weight times the second-order (Jacobian) denoising term to the loss
    # (`forward.eps_loss`): the learned eps is asked to jump between modes as the exact one does.
    jacobian_weight: float = 0.0
    jacobian_t_max: int = 0  # > 0: that term only at t < jacobian_t_max
    # > 0: add this weight times `forward.between_loss` (the minibatch's closed-form denoiser as
    # the target at points between training points, t < between_t_max).
    between_weight: float = 0.0
    between_t_max: int = DEFAULT_BETWEEN_T_MAX
    # Your own optax optimiser (any GradientTransformation): used instead of Adam at
    # `learning_rate` / `lr_schedule`, which are then ignored. Keep the same object across calls:
    # the config is a jit static argument, hashed by it.
    tx: optax.GradientTransformation | None = None

    def __post_init__(self):
        check_int(self.batch_size, "batch_size", low=1)
        check_float(self.learning_rate, "learning_rate", low=0.0, low_open=True)
        check(self.lr_schedule in ("constant", "cosine"), "lr_schedule", self.lr_schedule,
              "must be 'constant' or 'cosine'")
        if self.lr_schedule == "cosine":
            check_int(self.decay_steps, "decay_steps", low=1)
        check_int(self.focus_steps, "focus_steps", low=0)
        check_float(self.focus_prob, "focus_prob", low=0.0, high=1.0)
        check_float(self.ema_decay, "ema_decay", low=0.0, high=1.0)
        check(self.ema_decay < 1.0, "ema_decay", self.ema_decay, "must be < 1")
        check(self.batch_order in ("random", "in_order"), "batch_order", self.batch_order,
              "must be 'random' or 'in_order'")
        check_int(self.epochs, "epochs", low=0)
        check_int(self.warmup_steps, "warmup_steps", low=0)
        check_float(self.jacobian_weight, "jacobian_weight", low=0.0)
        check_int(self.jacobian_t_max, "jacobian_t_max", low=0)
        check_float(self.between_weight, "between_weight", low=0.0)
        check_int(self.between_t_max, "between_t_max", low=1)
        if self.lr_schedule == "cosine":
            check(self.warmup_steps < self.decay_steps, "warmup_steps", self.warmup_steps,
                  f"must be < decay_steps={self.decay_steps}")
        check(self.tx is None or isinstance(self.tx, optax.GradientTransformation), "tx",
              type(self.tx).__name__, "must be an optax.GradientTransformation (or None)")

    def proposal(self, num_steps: int):
        """The timestep proposal table (T,) for `eps_loss`, or None for uniform t."""
        if self.focus_steps == 0 or self.focus_prob == 0.0:
            return None
        check(self.focus_steps <= num_steps, "focus_steps", self.focus_steps,
              f"must be <= the schedule's T={num_steps}")
        return focused_timesteps(num_steps, self.focus_steps, self.focus_prob)

    def optimizer(self) -> optax.GradientTransformation:
        # Adam(0.9, 0.999), no weight decay, warm-up or clipping, as the official code (constant
        # learning rate, no EMA); "cosine" and `ema_decay` are options for short CPU runs.
        if self.tx is not None:
            return self.tx
        return optax.adam(self.schedule())

    def schedule(self):
        """The learning rate: a float (constant, no warm-up) or an optax schedule of the step."""
        lr, warm = self.learning_rate, self.warmup_steps
        if self.lr_schedule == "cosine":
            if warm:
                return optax.warmup_cosine_decay_schedule(0.0, lr, warm, self.decay_steps)
            return optax.cosine_decay_schedule(lr, self.decay_steps)
        return optax.linear_schedule(0.0, lr, warm) if warm else lr


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss; the state before the offending chunk is kept."""


def init_state(network, config: TrainConfig, key: jax.Array) -> TrainState:
    """Fresh params and optimiser state from `key` (vmap this over keys for an ensemble)."""
    check_key(key)
    params = network.init(jax.random.fold_in(key, 0))
    ema = jax.tree.map(jnp.copy, params) if config.ema_decay > 0 else None
    return TrainState(params, config.optimizer().init(params), jnp.zeros((), jnp.int32),
                      jax.random.fold_in(key, 1), ema)


def minibatch(config: TrainConfig, data: jax.Array, n_valid, step, key) -> jax.Array:
    """The batch of one step: i.i.d. rows of data[:n_valid] ("random"), or the official order
    ("in_order": consecutive blocks of the unshuffled data, n_valid // batch_size per epoch)."""
    if config.batch_order == "in_order":
        per_epoch = jnp.maximum(n_valid // config.batch_size, 1)
        start = (step % per_epoch) * config.batch_size
        return jax.lax.dynamic_slice_in_dim(data, start, config.batch_size, axis=0)
    return data[jax.random.randint(key, (config.batch_size,), 0, n_valid)]


def train_step(network, schedule: Schedule, config: TrainConfig, state: TrainState,
               data: jax.Array, n_valid) -> tuple[TrainState, jax.Array]:
    """One Adam step on a minibatch drawn from data[:n_valid]; returns the new state and the loss."""
    k_idx, k_loss = jax.random.split(jax.random.fold_in(state.key, state.step))
    x0 = minibatch(config, data, n_valid, state.step, k_idx)
    proposal = config.proposal(schedule.num_steps)

    def loss_fn(params):
        eps_fn = lambda x, t: network.apply(params, x, t)
        loss = eps_loss(eps_fn, schedule, x0, k_loss, proposal, config.jacobian_weight,
                        config.jacobian_t_max)
        if config.between_weight:
            loss = loss + config.between_weight * between_loss(
                eps_fn, schedule, x0, jax.random.fold_in(k_loss, 3), config.between_t_max)
        return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = config.optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema is not None:
        # Warm-up of the decay (as in common EMA practice): early averages forget the init.
        step = state.step.astype(jnp.float32)
        d = jnp.minimum(config.ema_decay, (1.0 + step) / (10.0 + step))
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
    if config.epochs > 0:  # past its own budget a model keeps its state (a vmapped no-op)
        active = state.step < config.epochs * (n_valid // config.batch_size)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
        params, opt_state, ema = keep((params, opt_state, ema),
                                      (state.params, state.opt_state, state.ema))
    return TrainState(params, opt_state, state.step + 1, state.key, ema), loss


def train_chunk(network, schedule: Schedule, config: TrainConfig, num_steps: int,
                state: TrainState, data: jax.Array, n_valid, unroll: bool = False
                ) -> tuple[TrainState, jax.Array]:
    """`num_steps` train steps as one `lax.scan` (or straight-line code, see `unroll`); returns the
    state and the losses (num_steps,).

    unroll: trace the steps as straight-line code instead of a loop. XLA:CPU runs a convolution's
    weight gradient ~30x slower inside a loop body than outside one (measured: BUILD_NOTES.md), and
    `lax.scan(..., unroll=True)` still leaves a one-trip loop around the copies (17x slower at one
    step per chunk), so conv nets on CPU train in short chunks of straight-line steps; MLPs and
    accelerators keep the rolled loop.
    """
    if unroll:
        losses = []
        for _ in range(num_steps):  # unrolling by hand: num_steps is small and static here
            state, loss = train_step(network, schedule, config, state, data, n_valid)
            losses.append(loss)
        return state, jnp.stack(losses)

    def body(s, _):
        return train_step(network, schedule, config, s, data, n_valid)

    return jax.lax.scan(body, state, None, length=num_steps)


TRAIN_LOOPS = ("single", "one", "map", "vmap")


def train_loop(state: TrainState, stacked: bool, unroll: bool = False) -> str:
    """How one jitted chunk runs over the models: 'single' (not stacked); on a CPU with the
    models on one device, 'one' (a model axis of 1, squeezed away) or 'map' (`lax.map`, one model
    after another, each at the single-model program's speed); else 'vmap' (one batched program:
    accelerators, or models sharded over devices). On XLA:CPU the vmapped matmuls become batched
    dots that run at about half the single-model rate at batch 10 000 (measured: BUILD_NOTES.md).
    With `unroll` (conv nets on CPU) several models keep vmap: a `lax.map` loop around the
    unrolled steps is what unrolling avoids. All give the same models up to float rounding."""
    if not stacked:
        return "single"
    step = state.step
    devices = getattr(getattr(step, "sharding", None), "device_set", None)
    on_one_device = devices is None or len(devices) == 1
    if jax.default_backend() != "cpu" or not on_one_device:
        return "vmap"
    if int(np.shape(step)[0]) == 1:
        return "one"
    return "vmap" if unroll else "map"


def _chunk(network, config, num_steps, loop, unroll, schedule, state, data, n_valid):
    run = lambda s, d, n: train_chunk(network, schedule, config, num_steps, s, d, n, unroll)
    if loop == "single":
        return run(state, data, n_valid)
    if loop == "one":
        first = lambda tree: jax.tree.map(lambda a: a[0], tree)
        return jax.tree.map(lambda a: a[None], run(first(state), data[0], n_valid[0]))
    if loop == "map":
        return jax.lax.map(lambda args: run(*args), (state, data, n_valid))
    return jax.vmap(run)(state, data, n_valid)


_chunk_jit = jax.jit(_chunk, static_argnums=(0, 1, 2, 3, 4), donate_argnums=(6,))


def _check_network_takes(network, state: TrainState, data, stacked: bool) -> None:
    """The network accepts rows of `data` (abstract evaluation, no compute): a data set of the
    wrong dimension is refused here in one line rather than failing inside the jitted chunk."""
    params = jax.tree.map(lambda a: a[0], state.params) if stacked else state.params
    rows = data[0, :2] if stacked else data[:2]
    signature = (network, jax.tree.structure(params),
                 tuple((jnp.shape(a), jnp.result_type(a)) for a in jax.tree.leaves(params)),
                 jnp.shape(rows), jnp.result_type(rows))
    if signature in _NETWORK_TAKES:  # checked once per network and shapes: no retrace after
        return
    try:
        jax.eval_shape(lambda p, x: network.apply(p, x, jnp.zeros((x.shape[0],), jnp.int32)),
                       params, rows)
    except (TypeError, ValueError) as e:
        raise InputError(f"data=(rows {tuple(jnp.shape(rows)[1:])}): {network.name} cannot take "
                         f"them ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    _NETWORK_TAKES.add(signature)


_NETWORK_TAKES: set = set()


def train(network, schedule: Schedule, config: TrainConfig, state: TrainState, data: jax.Array,
          n_valid, num_steps: int, *, chunk_steps: int = 500, stacked: bool = False,
          progress: Callable | None = None, on_chunk: Callable | None = None,
          unroll: bool = False, loop: str | None = None):
    """Train from `state` (its `step` may be > 0 when resuming) until step `num_steps`.

    Returns (state, losses) with losses of the steps run here, (steps,) or (M, steps).
    on_chunk(state, step, chunk_losses) runs after every chunk (checkpoints, evaluation).
    unroll: see `train_chunk` (for conv nets on CPU, with a small chunk_steps).
    loop: how a stacked chunk runs over the models, one of 'one' (a single stacked model), 'map',
    'vmap'; None: `train_loop`'s choice for this backend.
    The state passed in is donated: use the returned one.
    """
    num_steps = check_int(num_steps, "steps", low=0)
    chunk_steps = check_int(chunk_steps, "chunk_steps", low=1)
    check(isinstance(state, TrainState), "state", type(state).__name__, "must be a TrainState")
    rows = int(jnp.shape(data)[1 if stacked else 0])
    if is_concrete(n_valid):
        valid = np.asarray(to_host(n_valid))  # a global array spans several processes
        check(bool(np.all((valid >= 1) & (valid <= rows))), "n_valid", valid.tolist(),
              f"must lie in [1, {rows}] (the data's rows)")
    _check_network_takes(network, state, data, stacked)
    if loop is None:
        loop = train_loop(state, stacked, unroll)
    check(loop in TRAIN_LOOPS and (loop == "single") == (not stacked), "loop", loop,
          "must be 'single' for one model, else 'one', 'map' or 'vmap'")
    check(loop != "one" or int(np.shape(state.step)[0]) == 1, "loop", loop,
          "needs a model axis of 1")
    start = int(np.max(to_host(state.step)))
    check(start <= num_steps, "steps", num_steps, f"is below the state's step {start}")
    losses = []
    n_valid = jnp.asarray(n_valid, jnp.int32)
    t0 = time.perf_counter()
    step = start
    while step < num_steps:
        # Chunks end on multiples of chunk_steps, also when resuming from a checkpoint made with
        # another chunking, so hooks keyed to those steps (curves, snapshots) still fire.
        size = min(chunk_steps - step % chunk_steps, num_steps - step)
        new_state, chunk_losses = _chunk_jit(network, config, size, loop, unroll, schedule,
                                             state, data, n_valid)
        chunk_losses = to_host(chunk_losses)
        if not np.all(np.isfinite(chunk_losses)):
            bad = np.argwhere(~np.isfinite(chunk_losses.reshape(-1, size)))[0]
            raise NonFiniteLossError(
                f"non-finite training loss at step {step + int(bad[-1]) + 1}"
                + (f" of model {int(bad[0])}" if stacked else "")
                + f"; last good state is step {step}")
        state = new_state
        step += size
        losses.append(chunk_losses)
        if progress is not None:
            progress(step, num_steps, float(chunk_losses[..., -1].mean()), step - start,
                     time.perf_counter() - t0)
        if on_chunk is not None:
            on_chunk(state, step, chunk_losses)
    axis = 1 if stacked else 0
    empty_shape = (np.shape(n_valid)[0], 0) if stacked else (0,)
    all_losses = np.concatenate(losses, axis=axis) if losses else np.zeros(empty_shape, np.float32)
    return state, all_losses


TRAIN_CHECKPOINT = "train_state.msgpack"
TRAIN_LOSSES = "train_losses.npz"


def train_resumable(run: Callable, state: TrainState, checkpoint_dir, log: Callable = print,
                    every_s: float = 0.0):
    """Run `run(state, on_chunk) -> (state, losses)` for stacked models (losses (M, S)), saving
    the state and all losses so far into `checkpoint_dir` after every chunk and, if a checkpoint
    is there, starting from it instead of `state`. A resumed run replays the same chunks (the data
    order is a function of the state's key and step), so it ends bit-identical to an
    uninterrupted one. checkpoint_dir=None: no checkpoints. every_s > 0: save at most once per
    `every_s` seconds (and always at the end of a run that returns), for chunks much shorter
    than a checkpoint write; an exception loses at most `every_s` seconds of steps, which a
    resumed run replays identically.
    The losses file also keeps the training wall-clock seconds summed over every sitting
    (`recorded_seconds`; NaN once resumed from a file written before it was kept).
    Returns (state, all losses (M, S)).
    """
    from pathlib import Path

    from mi_jax import checkpoint
    from mi_jax.workdir import write_npz

    num_models = int(np.shape(state.step)[0])
    done = np.zeros((num_models, 0), np.float32)
    before = 0.0  # seconds of earlier sittings
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir) / TRAIN_CHECKPOINT
        loss_file = Path(checkpoint_dir) / TRAIN_LOSSES
        if ckpt.exists():
            state = checkpoint.load(ckpt, state)
            step = int(np.max(to_host(state.step)))
            with np.load(loss_file) as f:
                done = f["losses"][:, :step]
                before = float(f["seconds"]) if "seconds" in f.files else float("nan")
            log(f"resuming training from the checkpoint at step {step}")
    parts = [done]
    start = time.perf_counter()
    last = {"time": start, "saved": True}

    def write(st):
        write_npz(loss_file, losses=np.concatenate(parts, axis=1),
                  seconds=np.float64(before + time.perf_counter() - start))
        checkpoint.save(ckpt, st)  # after the losses: a checkpoint never outruns its losses
        last.update(time=time.perf_counter(), saved=True)

    def save(st, step, chunk_losses):
        parts.append(to_host(chunk_losses))
        last["saved"] = False
        if checkpoint_dir is not None and time.perf_counter() - last["time"] >= every_s:
            write(st)

    state, _ = run(state, save)
    if checkpoint_dir is not None and not last["saved"]:
        write(state)
    return state, np.concatenate(parts, axis=1)


def recorded_seconds(checkpoint_dir) -> float | None:
    """Training wall-clock seconds over every sitting, as `train_resumable` recorded them in
    `checkpoint_dir` (None: nothing recorded, or a sitting before the clock was kept)."""
    from pathlib import Path

    path = Path(checkpoint_dir) / TRAIN_LOSSES
    if not path.exists():
        return None
    with np.load(path) as f:
        seconds = float(f["seconds"]) if "seconds" in f.files else float("nan")
    return seconds if np.isfinite(seconds) else None


def print_progress(label: str = "train", every_s: float = 0.0):
    """A `progress` callback printing step, loss, steps/s and ETA (at most once per `every_s`
    seconds, and always at the last step)."""
    last = [-float("inf")]

    def report(step, total, loss, done, elapsed):
        if elapsed - last[0] < every_s and step < total:
            return
        last[0] = elapsed
        rate = done / max(elapsed, 1e-9)
        eta = (total - step) / max(rate, 1e-9)
        print(f"[{label}] step {step}/{total}  loss {loss:.4f}  {rate:,.1f} steps/s  "
              f"ETA {eta:,.0f}s", flush=True)

    return report
