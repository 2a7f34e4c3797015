"""Orbax checkpoints: save (atomic, keep N), restore, and reading a finished run.

This is the only module that reads or writes checkpoints: the trainer uses
`Checkpointer`; everything that loads a trained run (`evaluators.runs.load_run`,
the codec weights' `pretrained.load_checkpoint`, a task's pretrained init)
goes through `read_run`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """Thin wrapper of `ocp.CheckpointManager` for one train state pytree.

  Orbax writes each step to a temporary directory and renames it when complete,
  so a crash mid-save never leaves a checkpoint that `latest_step` returns.
  """

  def __init__(self, directory: str, *, keep: int = 3):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  @property
  def directory(self) -> str:
    return str(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Saves `state` at `step` and waits until it is on disk."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore(self, template: Any, step: int | None = None) -> Any:
    """Restores into the structure, dtypes and shardings of `template` (None: as saved)."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self._manager.directory}")
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint at step {step} in {self._manager.directory} "
                              f"(steps: {self.all_steps()})")
    args = ocp.args.StandardRestore() if template is None else ocp.args.StandardRestore(template)
    return self._manager.restore(step, args=args)

  def close(self) -> None:
    self._manager.close()


def read_config(workdir: str | pathlib.Path) -> dict[str, Any]:
  """The resolved `config.json` of a `python -m jaxcomp.main` run directory.

  Raises:
    FileNotFoundError: `workdir` has no config.json (not a jaxcomp run directory).
  """
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{workdir} is not a jaxcomp run directory (no config.json)")
  return json.loads(path.read_text())


def read_run(workdir: str | pathlib.Path, *, step: int | None = None
             ) -> tuple[dict[str, Any], dict[str, Any], int]:
  """`(config, state, step)` of a run directory: its config.json and a checkpoint as saved.

  Args:
    workdir: a `python -m jaxcomp.main` run directory.
    step: the checkpoint's step; None for the latest.

  Returns:
    The config as a dict, the saved train state as nested dicts of numpy arrays
    (`{"params", "collections", "opt_state", "ema_params", "step", "rng"}` for
    runs of the trainer), and the step read.

  Raises:
    FileNotFoundError: no config.json, no checkpoint, or none at `step`.
  """
  config = read_config(workdir)
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise FileNotFoundError(f"no checkpoint in {directory}")
  ckpt = Checkpointer(str(directory))
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    state = ckpt.restore(None, step)
  finally:
    ckpt.close()
  return config, state, int(step)


def eval_variables(state: dict[str, Any]) -> dict[str, Any]:
  """`{"params": ..., **collections}` of a saved train state (the EMA parameters if kept)."""
  params = state["ema_params"] if state.get("ema_params") else state["params"]
  return {"params": params, **(state.get("collections") or {})}
