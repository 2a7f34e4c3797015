"""The contract between the generic trainer and a task.

A task owns its model, data, loss and evaluation; the trainer owns the
optimizer, the mesh, checkpoints, logging and the loop, and calls nothing but
the methods below (one train step serves every task; CONVENTIONS: no
near-duplicate train steps). A new task is one module: a `Task` subclass
registered with `@TASKS.register("name")`, and `config.task = "name"`.

The trainer's order of calls:

    task = TASKS.get(config.task)(config, mesh)
    state = init (task.init_variables) or restore from the newest checkpoint
    state = task.prepare(state)                       # once, step 0 or restored
    tx = chain(task.gradient_transform(), optimizer groups, task.update_transform())
    loop: state = train_step(state, next(task.train_iterator(...)))  # task.loss inside jit
          if step in task.event_steps(total): state = task.on_step_end(step, state)
          checkpoint (after the events of that step), task.evaluate(...)

Events run outside jit, after the optimizer step that brings `state.step` to
the event's step and before that step's checkpoint; a run resumed from the
checkpoint of step s therefore has every event <= s in its state and runs every
event > s: none is run twice, none is skipped. Whatever an event changes must
live in the train state (parameters, optimizer state, model collections) so
that it is checkpointed with it.

Parameter groups are data (`config.optim_groups`, `jaxcomp.optim`), not task code.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import optax

from jaxcomp.registry import Registry

Variables = dict[str, Any]   # {"params": ..., and mutable collections, e.g. "batch_stats"}
Batch = dict[str, np.ndarray]


class Task:
  """Base class of every task. Subclasses implement the first five methods.

  Attributes:
    config: the experiment config.
    mesh: the device mesh the trainer runs on.
    steps_per_epoch: optimizer steps per pass over the training data.
  """

  steps_per_epoch: int

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    self.config = config
    self.mesh = mesh

  # --- required ---------------------------------------------------------------
  def train_iterator(self, *, seed: int, start_step: int) -> Iterator[Batch]:
    """Host-local training batches; batch s is a function of (seed, s) only."""
    raise NotImplementedError

  def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
    """Initial variables for a batch of the training shape."""
    raise NotImplementedError

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    """Scalar loss, (scalar metrics incl. "loss", updated mutable collections). Pure, jit-able."""
    raise NotImplementedError

  def evaluate(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Evaluation metrics over the task's eval data (host floats)."""
    raise NotImplementedError

  def apply_fn(self, variables: Variables, inputs: jax.Array) -> jax.Array:
    """The trained function in inference mode (logits for a classifier, ...)."""
    raise NotImplementedError

  # --- optional hooks (defaults do nothing) -----------------------------------
  def prepare(self, state: Any) -> Any:
    """Runs once per process after the state is initialised (`state.step == 0`) or
    restored (`> 0`); returns the state to train from. E.g. JPEG-DL tables from a
    pretrained classifier, a pretrained encoder: done at step 0 only, since a
    restored state already holds them. If the parameters change at step 0 the
    trainer re-initialises the optimizer state and the EMA from them."""
    return state

  def gradient_transform(self) -> optax.GradientTransformation | None:
    """An optax transform applied to the gradients before the optimizer groups
    (e.g. the LSQ gradient scale of JPEG-DL's tables); None for none."""
    return None

  def update_transform(self) -> optax.GradientTransformation | None:
    """An optax transform applied to the final updates, after weight decay,
    momentum and Adam (e.g. RePr's filter masks, so masked filters never move);
    None for none."""
    return None

  def event_steps(self, total_steps: int) -> tuple[int, ...]:
    """The steps (1..total_steps) after which `on_step_end` runs."""
    del total_steps
    return ()

  def on_step_end(self, step: int, state: Any) -> tuple[Any, dict[str, Any]]:
    """The event due after optimizer step `step`: returns (new state, a JSON-able
    record of what it did, written to the run's event log). Runs outside jit."""
    raise NotImplementedError(f"{type(self).__name__} declares event steps but no on_step_end")


TASKS: Registry = Registry("task")


def get_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Task:
  """Builds the task named by `config.task` (every built-in task is registered on import)."""
  import jaxcomp.tasks  # noqa: F401  pylint: disable=g-import-not-at-top  (registers the tasks)
  return TASKS.get(config.task)(config, mesh)
