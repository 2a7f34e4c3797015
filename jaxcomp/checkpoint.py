"""Orbax checkpoints: save (atomic, keep N), restore into a template, latest step."""

from __future__ import annotations

import os
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

  def save(self, step: int, state: Any) -> None:
    """Saves `state` at `step` and waits until it is on disk."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore(self, template: Any, step: int | None = None) -> Any:
    """Restores into the structure, dtypes and shardings of `template`."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self._manager.directory}")
    return self._manager.restore(step, args=ocp.args.StandardRestore(template))

  def close(self) -> None:
    self._manager.close()
