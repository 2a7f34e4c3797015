"""Loading a finished training run (a `python -m jaxcomp.main` workdir) of any task."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections

from jaxcomp import checkpoint
from jaxcomp import parallel
from jaxcomp.tasks import base as tasks_base


def load_run(workdir: str | pathlib.Path, *, step: int | None = None
             ) -> tuple[tasks_base.Task, dict[str, Any]]:
  """The task (built from the run's config.json) and the eval variables of a checkpoint.

  Works for every registered task (classification, rate-distortion, ...). The
  variables are `{"params": ..., **collections}` (EMA parameters when the run
  kept them), ready for `task.apply_fn(variables, inputs)` / `task.evaluate`.

  Args:
    workdir: the run directory.
    step: the checkpoint's step; None for the latest.

  Raises:
    FileNotFoundError: `workdir` is not a jaxcomp workdir or holds no checkpoint.
  """
  config_dict, state, _ = checkpoint.read_run(workdir, step=step)
  config = ml_collections.ConfigDict(config_dict)
  config.train.progress_bar = False
  task = tasks_base.get_task(config, parallel.create_mesh(1, jax.devices()[:1]))
  return task, checkpoint.eval_variables(state)
