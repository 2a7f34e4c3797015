"""The one trainer: train state, a pure train step, and the loop with checkpoints.

Every task (classification, rate-distortion, ...) runs through `train_step` and
plugs in only through the task contract (`jaxcomp.tasks.base.Task`: `prepare`,
`gradient_transform` / `update_transform`, `event_steps` + `on_step_end`);
parameter groups (JPEG-DL's tables, the codecs' auxiliary quantiles, frozen
parts) are config data (`config.optim_groups`, `jaxcomp.optim`).

Reproducibility: batch s is a function of (seed, s) and the step's randomness is
`fold_in(rng, step)`, so a run resumed from a checkpoint computes exactly what
an uninterrupted run computes (tested on CPU).
"""

from __future__ import annotations

import functools
import json
import pathlib
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxcomp import checkpoint as checkpoint_lib
from jaxcomp import config_lib
from jaxcomp import optim
from jaxcomp import parallel
from jaxcomp import writers
from jaxcomp.tasks import base as tasks_base


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: a pytree that orbax saves whole."""
  step: jax.Array            # int32 scalar: optimizer steps taken
  params: Any
  collections: Any           # mutable model collections, e.g. {"batch_stats": ...}
  opt_state: Any
  ema_params: Any            # EMA of params ({} when EMA is off)
  rng: jax.Array             # uint32[2] base key; step s uses fold_in(rng, s)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fn: Callable,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               accum_steps: int = 1, ema_decay: float = 0.0
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a global batch (pure; jit it with shardings).

  Args:
    state: the current train state.
    batch: global batch, leading axis the batch.
    loss_fn: `task.loss(variables, batch, rng, train=True) -> (loss, (metrics, updates))`.
    tx: the optimizer.
    schedule: learning rate of the default group (logged).
    accum_steps: split the batch into this many micro-batches and average their
      gradients (mutable collections update micro-batch after micro-batch).
    ema_decay: if > 0, `ema = d * ema + (1 - d) * params` after the update.

  Returns:
    The new state and scalar metrics (the task's, plus grad_norm, param_norm and
    learning_rate).
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def objective(params, collections, micro, key):
    return loss_fn({"params": params, **collections}, micro, key, train=True)

  grad_fn = jax.value_and_grad(objective, has_aux=True)
  if accum_steps == 1:
    (_, (metrics, updates)), grads = grad_fn(state.params, state.collections, batch, rng)
    collections = {**state.collections, **updates}
  else:
    micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

    def body(carry, inputs):
      colls, grad_sum = carry
      mb, i = inputs
      (_, (m, up)), g = grad_fn(state.params, colls, mb, jax.random.fold_in(rng, i))
      return ({**colls, **up}, jax.tree.map(jnp.add, grad_sum, g)), m

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (collections, grad_sum), per_micro = jax.lax.scan(
        body, (state.collections, zeros), (micro, jnp.arange(accum_steps)))
    grads = jax.tree.map(lambda g: g / accum_steps, grad_sum)
    metrics = jax.tree.map(jnp.mean, per_micro)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_decay > 0:
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                              state.ema_params, params)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                 param_norm=optax.global_norm(params), learning_rate=schedule(state.step))
  new_state = state.replace(step=state.step + 1, params=params, collections=collections,
                            opt_state=opt_state, ema_params=ema_params)
  return new_state, metrics


class Trainer:
  """Builds the state, its shardings and the jitted step for a task and config."""

  def __init__(self, config: ml_collections.ConfigDict, task: tasks_base.Task,
               mesh: jax.sharding.Mesh):
    self.config = config
    self.task = task
    self.mesh = mesh
    self.steps_per_epoch = task.steps_per_epoch
    self.total_steps = config.train.num_steps or max(
        int(round(config.train.epochs * self.steps_per_epoch)), 1)
    accum = config.train.grad_accum_steps
    if config.train.batch_size % accum:
      raise config_lib.ConfigError(
          f"train.batch_size={config.train.batch_size} is not divisible by "
          f"train.grad_accum_steps={accum}")

  def init_state(self, batch: dict[str, np.ndarray]) -> TrainState:
    """A fresh state, seeded by `config.seed`, laid out with its shardings.

    Also builds the optimizer (`self.tx`): the task's gradient transform, the
    parameter groups of `config.optim_groups`, the task's update transform.

    Raises:
      ConfigError: an `optim_groups` entry that matches no parameter (or is malformed).
    """
    example = {k: np.asarray(v[:1]) for k, v in batch.items()}
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(self.config.seed))
    shapes = jax.eval_shape(self.task.init_variables, init_rng, example)
    try:
      self.tx, self.schedule = optim.make_optimizer(
          self.config, shapes["params"], steps_per_epoch=self.steps_per_epoch,
          total_steps=self.total_steps, gradient_transform=self.task.gradient_transform(),
          update_transform=self.task.update_transform())
    except ValueError as e:
      raise config_lib.ConfigError(str(e)) from None

    def init() -> TrainState:
      variables = dict(self.task.init_variables(init_rng, example))
      params = variables.pop("params")
      ema = jax.tree.map(jnp.copy, params) if self.config.train.ema_decay > 0 else {}
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, collections=variables,
                        opt_state=self.tx.init(params), ema_params=ema, rng=state_rng)

    abstract = jax.eval_shape(init)
    self.state_shardings = parallel.param_shardings(
        abstract, self.mesh, self.config.parallel.shard_params_min_size)
    self.abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract, self.state_shardings)
    return jax.jit(init, out_shardings=self.state_shardings)()

  def prepare(self, state: TrainState) -> TrainState:
    """`task.prepare`, once, after init or restore; at step 0 the optimizer state and
    the EMA are rebuilt from the parameters it returns."""
    state = self.task.prepare(state)
    if int(state.step) == 0:
      state = state.replace(opt_state=self.tx.init(state.params),
                            ema_params=(jax.tree.map(jnp.copy, state.params)
                                        if self.config.train.ema_decay > 0 else {}))
    return jax.device_put(state, self.state_shardings)

  @functools.cached_property
  def step_fn(self) -> Callable:
    """`train_step` jitted with explicit shardings; the old state is donated."""
    step = functools.partial(
        train_step, loss_fn=self.task.loss, tx=self.tx, schedule=self.schedule,
        accum_steps=self.config.train.grad_accum_steps,
        ema_decay=self.config.train.ema_decay)
    return jax.jit(step, in_shardings=(self.state_shardings, parallel.data_sharding(self.mesh)),
                   out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
                   donate_argnums=0)

  def eval_variables(self, state: TrainState) -> dict[str, Any]:
    params = state.ema_params if self.config.train.ema_decay > 0 else state.params
    return {"params": params, **state.collections}


class _PreemptionFlag:
  """Turns SIGTERM into a flag the loop checks between steps (main thread only)."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no preemption handling
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _every(n: int, default: int) -> int:
  return n if n > 0 else default


# What a resumed run must share with the run that wrote its checkpoints (plus
# every optimizer section): the model, the optimizer, the batch and the seed.
RESUME_KEYS = ("seed", "task", "model", "codec", "optim_groups", "train.batch_size")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for k, v in tree.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return out


def config_changes(saved: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """`"key: old -> new"` for every `RESUME_KEYS` or optimizer field that differs.

  Args:
    saved: the `config.json` of the run being resumed (a dict).
    config: the config of the resuming run.

  Returns:
    The differences, sorted by key (keys present on one side only are not compared).
  """
  prefixes = RESUME_KEYS + tuple(config_lib.optimizer_sections(config))
  old = _flatten(saved)
  new = _flatten(json.loads(config.to_json_best_effort()))
  return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old.keys() & new.keys())
          if any(k == p or k.startswith(p + ".") for p in prefixes) and old[k] != new[k]]


def _check_resume(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """ConfigError if resuming `workdir` with `config` changes the model, optimizer, batch or seed."""
  path = workdir / "config.json"
  if not path.is_file():
    return
  try:
    saved = json.loads(path.read_text())
  except (OSError, ValueError):
    return
  changes = config_changes(saved, config)
  if not changes:
    return
  if config.train.allow_config_change:
    logging.warning("resuming %s with a changed config: %s", workdir, "; ".join(changes))
    return
  raise config_lib.ConfigError(
      f"{workdir} holds checkpoints of a run with another config ({'; '.join(changes)}): "
      "use a new --workdir, or set --config.train.allow_config_change=True to continue anyway")


@jax.jit
def _all_finite(state: TrainState) -> jax.Array:
  """Whether every floating-point leaf of the state is finite (params, optimizer state, ...)."""
  leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in leaves] or [True]))


def _divergence(step: int, detail: str, ckpt: checkpoint_lib.Checkpointer) -> FloatingPointError:
  """The error that stops a diverged run, naming the checkpoint to resume from, if any."""
  good = ckpt.latest_step()
  where = (f"The last good checkpoint is step {good} in {ckpt.directory}." if good is not None
           else f"There is no last good checkpoint (none was saved before step {step}).")
  return FloatingPointError(f"non-finite loss or state at step {step} ({detail}); stopping. "
                            f"{where} Lower optim.learning_rate or set optim.grad_clip_norm.")


def _check_finite(host: list[dict[str, Any]], first_step: int,
                  ckpt: checkpoint_lib.Checkpointer) -> None:
  """FloatingPointError at the first step whose loss, gradient norm or parameter norm is
  not finite (`host`: the metrics of steps `first_step`, `first_step + 1`, ...)."""
  for i, m in enumerate(host):
    values = {k: float(np.asarray(m[k])) for k in ("loss", "grad_norm", "param_norm") if k in m}
    if not all(np.isfinite(v) for v in values.values()):
      raise _divergence(first_step + i,
                        ", ".join(f"{k}={v:.4g}" for k, v in values.items()), ckpt)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs what `config.mode` asks for in `workdir` and returns the summary.

  Writes `config.json`, `metrics.jsonl`, `tensorboard/`, `checkpoints/`,
  `plots.png` and `summary.json`. Restarted on the same workdir, it resumes
  from the newest checkpoint that verifies (`checkpoint.Checkpointer`), after
  checking that the config keeps the model, optimizer, batch size and seed
  (`config_changes`; `train.allow_config_change=True` overrides). SIGTERM saves
  a checkpoint and returns with `summary["preempted"] = True`. A non-finite
  loss, gradient norm or parameter norm, or a non-finite value anywhere in the
  state at a checkpoint, raises `FloatingPointError` before anything non-finite
  is saved (so rotation never removes the last good checkpoint), naming it.

  Raises:
    ConfigError: an invalid config, a resume that changes the config, or
      mode=evaluate without a checkpoint.
    checkpoint.CheckpointError: the checkpoint directory cannot be written, a
      save failed, or no checkpoint restores.
    FloatingPointError: the run diverged.
  """
  config = config_lib.validate(config)
  workdir_path = pathlib.Path(workdir)
  if workdir_path.exists() and not workdir_path.is_dir():
    raise NotADirectoryError(f"workdir {workdir} is not a directory")
  workdir_path.mkdir(parents=True, exist_ok=True)
  parallel.initialize_distributed()
  is_main = jax.process_index() == 0
  ckpt = checkpoint_lib.Checkpointer(str(workdir_path / "checkpoints"),
                                     keep=config.train.keep_checkpoints)
  try:
    if ckpt.latest_step() is not None:
      _check_resume(config, workdir_path)
    elif config.mode == "evaluate":
      raise config_lib.ConfigError(f"mode=evaluate needs a checkpoint in {ckpt.directory}")
    mesh = parallel.create_mesh(config.parallel.model_axis)
    task = tasks_base.get_task(config, mesh)
    trainer = Trainer(config, task, mesh)
    first_batch = next(iter(task.train_iterator(seed=config.seed, start_step=0)))
    state = trainer.init_state(first_batch)
    restored = ckpt.restore_latest(trainer.abstract_state)
  except BaseException:
    ckpt.close()
    raise
  if is_main:
    writers.write_atomic(workdir_path / "config.json", config.to_json_best_effort(indent=2))
  state, start_step = restored if restored is not None else (state, 0)
  state = trainer.prepare(state)
  writer = writers.MetricWriter(workdir_path, enabled=is_main, resume_step=start_step)
  summary: dict[str, Any] = {"workdir": str(workdir_path), "total_steps": trainer.total_steps,
                             "steps_per_epoch": trainer.steps_per_epoch,
                             "resumed_from_step": start_step, "preempted": False}
  try:
    if config.mode != "evaluate":
      summary.update(_train_loop(config, trainer, state, start_step, ckpt, writer, is_main))
      state = summary.pop("state")
    if config.mode != "train" and not summary["preempted"]:
      eval_metrics = task.evaluate(trainer.eval_variables(state), mesh)
      writer.write(int(state.step), "eval", eval_metrics)
      summary["eval"] = eval_metrics
  finally:
    writer.close()
    ckpt.close()
  summary["final_step"] = int(state.step)
  if is_main:
    writers.plot_metrics(workdir_path)
    writers.write_json(workdir_path / "summary.json", summary)
  return summary


def _train_loop(config, trainer: Trainer, state: TrainState, start_step: int,
                ckpt: checkpoint_lib.Checkpointer, writer: writers.MetricWriter,
                is_main: bool) -> dict[str, Any]:
  """Steps from `start_step` to `trainer.total_steps`; returns state and timing."""
  task, mesh, total = trainer.task, trainer.mesh, trainer.total_steps
  log_every = _every(config.train.log_every_steps, trainer.steps_per_epoch)
  eval_every = _every(config.train.eval_every_steps, trainer.steps_per_epoch)
  ckpt_every = _every(config.train.checkpoint_every_steps, trainer.steps_per_epoch)
  batches = task.train_iterator(seed=config.seed, start_step=start_step)
  event_steps = frozenset(task.event_steps(total))
  pending: list[dict[str, jax.Array]] = []
  bar = None
  if is_main and config.train.progress_bar:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True)
  t_start, t_window, steps_window = time.perf_counter(), time.perf_counter(), 0
  images_seen, preempted, window_rates = 0, False, []
  step = start_step
  with _PreemptionFlag() as flag:
    while step < total:
      batch = parallel.host_to_global(next(batches), mesh)
      state, metrics = trainer.step_fn(state, batch)
      step += 1
      steps_window += 1
      images_seen += config.train.batch_size
      pending.append(metrics)
      if bar is not None:
        bar.update(1)
      stop = flag.raised  # read once: SIGTERM may arrive at any moment below
      at_ckpt = step % ckpt_every == 0 or step == total or stop
      if step in event_steps:   # before this step's checkpoint: a resume never repeats it
        state, record = task.on_step_end(step, state)
        state = jax.device_put(state, trainer.state_shardings)
        writer.write(step, "event", record)
      if step % log_every == 0 or at_ckpt or step % eval_every == 0:
        host = jax.device_get(pending)
        pending = []
        _check_finite(host, step - len(host) + 1, ckpt)
        now = time.perf_counter()
        row = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
        row["steps_per_s"] = steps_window / max(now - t_window, 1e-9)
        row["images_per_s"] = row["steps_per_s"] * config.train.batch_size
        window_rates.append(row["images_per_s"])
        row["epoch"] = step / trainer.steps_per_epoch
        writer.write(step, "train", row)
        if bar is not None:
          bar.set_postfix(loss=f"{row['loss']:.4f}", steps_s=f"{row['steps_per_s']:.2f}")
        t_window, steps_window = now, 0
      if at_ckpt:
        if not bool(_all_finite(state)):    # e.g. the EMA or batch statistics
          raise _divergence(step, "a non-finite value in the train state", ckpt)
        ckpt.save(step, state)
      if stop:
        preempted = True
        break
      if step % eval_every == 0 and step < total and config.mode != "train":
        writer.write(step, "eval", task.evaluate(trainer.eval_variables(state), mesh))
  if bar is not None:
    bar.close()
  seconds = time.perf_counter() - t_start
  return {"state": state, "preempted": preempted, "train_seconds": seconds,
          "train_images_per_s": images_seen / max(seconds, 1e-9),
          # The first window includes compilation; the median of the others is
          # the steady-state rate.
          "steady_images_per_s": float(np.median(window_rates[1:] or window_rates or [0.0]))}
