"""Loading a finished training run (a `python -m jaxcomp.main` workdir) for evaluation."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections

from jaxcomp import checkpoint as checkpoint_lib
from jaxcomp import parallel
from jaxcomp.tasks.classification import ClassificationTask


def load_run(workdir: str | pathlib.Path) -> tuple[ClassificationTask, dict[str, Any]]:
  """The task (from the run's config.json) and eval variables of its latest checkpoint.

  The variables are `{"params": ..., **collections}` (EMA parameters when the
  run kept them), ready for `task.apply_fn(variables, images)`.

  Raises:
    FileNotFoundError: `workdir` is not a jaxcomp workdir or holds no checkpoint.
  """
  workdir = pathlib.Path(workdir)
  if not (workdir / "config.json").exists():
    raise FileNotFoundError(f"{workdir}/config.json not found: not a jaxcomp workdir")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  config.train.progress_bar = False
  task = ClassificationTask(config, parallel.create_mesh(1, jax.devices()[:1]))
  ckpt = checkpoint_lib.Checkpointer(str(workdir / "checkpoints"))
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  state = ckpt.restore(None)
  ckpt.close()
  params = state["ema_params"] if state["ema_params"] else state["params"]
  return task, {"params": params, **state["collections"]}
