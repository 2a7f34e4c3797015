"""The interface between the generic trainer and a task.

A task owns its model, data, loss and evaluation; the trainer owns the
optimizer, the mesh, checkpoints, logging and the loop. One train step serves
every task (CONVENTIONS: no near-duplicate train steps).
"""

from __future__ import annotations

import importlib
from typing import Any, Iterator, Protocol

import jax
import ml_collections
import numpy as np

from jaxcomp.registry import Registry

Variables = dict[str, Any]   # {"params": ..., and mutable collections, e.g. "batch_stats"}
Batch = dict[str, np.ndarray]


class Task(Protocol):
  """What the trainer needs from a task.

  Parameter groups: `param_labels` maps every parameter leaf to a group name;
  the trainer builds one optax optimizer per group (`optim` for "default",
  `jpeg_optim` for "jpeg", Adam at `codec.aux_learning_rate` for "aux").
  """

  steps_per_epoch: int

  def train_iterator(self, *, seed: int, start_step: int) -> Iterator[Batch]:
    """Host-local training batches; batch s is a function of (seed, s) only."""

  def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
    """Initial variables for a batch of the training shape."""

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    """Scalar loss, (scalar metrics, updated mutable collections). Pure, jit-able."""

  def param_labels(self, params: Any) -> Any:
    """A pytree like `params` of group names ("default", "jpeg", "aux")."""

  def evaluate(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Evaluation metrics over the task's eval data (host floats)."""


TASKS: Registry = Registry("task")


_TASK_MODULES = {"classification": "jaxcomp.tasks.classification",
                 "rate_distortion": "jaxcomp.tasks.rate_distortion"}


def get_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Task:
  """Builds the task named by `config.task` (importing only its module)."""
  if config.task in _TASK_MODULES:
    importlib.import_module(_TASK_MODULES[config.task])  # registers it
  return TASKS.get(config.task)(config, mesh)
