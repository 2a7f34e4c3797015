"""Orbax checkpoints: save (atomic, checksummed, keep N), restore with fallback, read a finished run.

This is the only module that reads or writes checkpoints: the trainer uses
`Checkpointer`; everything that loads a trained run (`evaluators.runs.load_run`,
the codec weights' `pretrained.load_checkpoint`, a task's pretrained init)
goes through `read_run`.

On disk: `checkpoints/<step>/`, written by orbax to a temporary name and
renamed when complete (`_CHECKPOINT_METADATA` inside marks it so), plus
`jaxcomp_sha256.json` beside orbax's files, the SHA-256 of every one of them,
written right after. Guarantees:
- a folder that is not a complete checkpoint (a stray or empty numeric folder,
  a save cut short) is never restored;
- a damaged checkpoint (a checksum mismatch, a missing or unreadable file) is
  an error, never a silent restore of other numbers; restoring "the latest"
  then falls back to the newest checkpoint that verifies, with a warning that
  names what was skipped and why, and a writable `Checkpointer` (the trainer's)
  renames the damaged folder to `<step>.damaged` so that it is kept for
  inspection but never shadows the good ones again;
- rotation (`keep`) deletes only complete checkpoints older than the one just
  saved, so it never removes the newest good checkpoint;
- a save that cannot succeed fails at once with a `CheckpointError`: the
  directory is checked to be a writable directory up front, and orbax creates
  its folders synchronously (orbax's background threads otherwise wait 5
  minutes for a folder whose creation failed before the process can exit).
Checkpoints without a checksum file (written before checksums existed, or by
plain orbax) are restored unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxcomp import writers

CHECKSUMS = "jaxcomp_sha256.json"
_COMPLETE = "_CHECKPOINT_METADATA"   # orbax writes it when a step is finalized


class CheckpointError(OSError):
  """A checkpoint that cannot be saved or restored; the message says which and why."""


def _first_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _checksums(path: pathlib.Path) -> dict[str, str]:
  """SHA-256 of every file under `path` (but the checksum file), by relative path."""
  sums = {}
  for f in sorted(path.rglob("*")):
    if f.is_file() and f != path / CHECKSUMS:
      digest = hashlib.sha256()
      with open(f, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
          digest.update(chunk)
      sums[f.relative_to(path).as_posix()] = digest.hexdigest()
  return sums


def verify(path: str | pathlib.Path) -> str | None:
  """None if `path` is a complete checkpoint whose files match their checksums, else why not.

  A complete checkpoint without a checksum file is accepted (unverifiable).
  """
  path = pathlib.Path(path)
  if not (path / _COMPLETE).is_file():
    return "not a complete checkpoint"
  if not (path / CHECKSUMS).exists():
    return None
  try:
    expected = json.loads((path / CHECKSUMS).read_text())["sha256"]
    actual = _checksums(path)
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"unreadable ({_first_line(e)})"
  missing = sorted(set(expected) - set(actual))
  if missing:
    return f"{len(missing)} file(s) missing, e.g. {missing[0]}"
  changed = sorted(k for k, v in expected.items() if actual[k] != v)
  if changed:
    return f"checksum mismatch in {len(changed)} file(s), e.g. {changed[0]}"
  return None


class Checkpointer:
  """Checkpoints of one train state pytree in a directory (see the module docstring).

  Args:
    directory: the checkpoint directory (created if `writable`).
    keep: how many of the newest checkpoints rotation keeps (None: all).
    writable: False to only read (no directory check, no repairs).

  Raises:
    CheckpointError: `directory` is a file, or (writable) cannot be created or written.
  """

  def __init__(self, directory: str, *, keep: int | None = 3, writable: bool = True):
    self._path = pathlib.Path(os.path.abspath(directory))
    self._keep = keep
    self._writable = writable
    if self._path.exists() and not self._path.is_dir():
      raise CheckpointError(f"cannot keep checkpoints in {self._path}: it is not a directory")
    if writable:
      try:
        self._path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=self._path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
      except OSError as e:
        raise CheckpointError(f"cannot write checkpoints to {self._path}: "
                              f"{e.strerror or _first_line(e)}") from None
    self._manager = ocp.CheckpointManager(
        self._path, options=ocp.CheckpointManagerOptions(
            max_to_keep=None, create=False,
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False)))

  @property
  def directory(self) -> str:
    return str(self._path)

  def _folders(self) -> list[int]:
    """Steps of every numeric folder, complete or not, ascending."""
    if not self._path.is_dir():
      return []
    return sorted(int(p.name) for p in self._path.iterdir() if p.name.isdigit() and p.is_dir())

  def all_steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending (not verified against their checksums)."""
    return [s for s in self._folders() if (self._path / str(s) / _COMPLETE).is_file()]

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step (not verified: `restore_latest` does that)."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any) -> None:
    """Saves `state` at `step`, waits until it is on disk, writes its checksums, rotates.

    Raises:
      CheckpointError: the save failed (disk full, permissions, ...).
    """
    target = self._path / str(step)
    if target.exists():
      reason = verify(target)
      if reason is None:
        return                                  # saved already (e.g. before a preemption)
      self._set_aside(step, reason)
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
      self._manager.wait_until_finished()
      if jax.process_index() == 0:
        writers.write_json(target / CHECKSUMS, {"sha256": _checksums(target)})
    except Exception as e:  # noqa: BLE001  (orbax and the file system raise many types)
      raise CheckpointError(f"saving the checkpoint of step {step} in {self._path} failed: "
                            f"{_first_line(e)}") from e
    if self._keep and jax.process_index() == 0:
      older = [s for s in self.all_steps() if s <= step]
      for old in older[:-self._keep]:
        doomed = self._path / f"{old}.deleting"
        os.replace(self._path / str(old), doomed)   # never a half-deleted numeric folder
        shutil.rmtree(doomed, ignore_errors=True)
      self._manager.reload()                        # orbax caches the steps it has seen

  def _set_aside(self, step: int, reason: str) -> None:
    """Renames a damaged or incomplete step folder to `<step>.damaged[.n]` (writable only)."""
    if not self._writable or jax.process_index() != 0:
      return
    n, target = 0, self._path / f"{step}.damaged"
    while target.exists():
      n += 1
      target = self._path / f"{step}.damaged.{n}"
    os.replace(self._path / str(step), target)
    self._manager.reload()
    logging.warning("checkpoint folder %s (%s) moved to %s", self._path / str(step), reason,
                    target.name)

  def _restore(self, template: Any, step: int) -> Any:
    args = ocp.args.StandardRestore() if template is None else ocp.args.StandardRestore(template)
    return self._manager.restore(step, args=args)

  def restore(self, template: Any, step: int | None = None) -> Any:
    """Restores into the structure, dtypes and shardings of `template` (None: as saved).

    Args:
      template: an abstract (or concrete) state, or None.
      step: the checkpoint's step; None for the newest one that restores
        (`restore_latest`).

    Raises:
      FileNotFoundError: no checkpoint (at `step`).
      CheckpointError: the checkpoint at `step` is incomplete or damaged, or
        (step None) no checkpoint restores.
    """
    if step is None:
      restored = self.restore_latest(template)
      if restored is None:
        raise FileNotFoundError(f"no checkpoint in {self._path}")
      return restored[0]
    if step not in self._folders():
      raise FileNotFoundError(f"no checkpoint at step {step} in {self._path} "
                              f"(steps: {self.all_steps()})")
    reason = verify(self._path / str(step))
    if reason is not None:
      raise CheckpointError(f"the checkpoint of step {step} in {self._path} is damaged: {reason}")
    return self._restore(template, step)

  def restore_latest(self, template: Any) -> tuple[Any, int] | None:
    """`(state, step)` of the newest checkpoint that verifies and restores; None if none exists.

    Folders that are not complete checkpoints and damaged checkpoints are
    skipped (and set aside when writable), with a warning naming each.

    Raises:
      CheckpointError: there are checkpoint folders but none restores, or a
        verified checkpoint does not fit `template` (another model or optimizer).
    """
    skipped = []
    for step in reversed(self._folders()):
      reason = verify(self._path / str(step))
      if reason is None:
        try:
          state = self._restore(template, step)
        except Exception as e:  # noqa: BLE001
          if (self._path / str(step) / CHECKSUMS).exists():   # intact bytes: a mismatch
            raise CheckpointError(
                f"the checkpoint of step {step} in {self._path} does not fit this run's state "
                f"(another model or optimizer?): {_first_line(e)}") from e
          skipped.append(f"step {step}: orbax cannot read it ({_first_line(e)})")
          continue
        if skipped:
          logging.warning("restored the checkpoint of step %d in %s after skipping %s", step,
                          self._path, "; ".join(skipped))
        return state, step
      skipped.append(f"step {step}: {reason}")
      self._set_aside(step, reason)
    if skipped:
      raise CheckpointError(f"no checkpoint in {self._path} can be restored: "
                            + "; ".join(skipped))
    return None

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
    step: the checkpoint's step; None for the newest one that verifies (a
      damaged newer one is skipped with a warning).

  Returns:
    The config as a dict, the saved train state as nested dicts of numpy arrays
    (`{"params", "collections", "opt_state", "ema_params", "step", "rng"}` for
    runs of the trainer), and the step read.

  Raises:
    FileNotFoundError: no config.json, no checkpoint, or none at `step`.
    CheckpointError: the checkpoint at `step` (or every one) is damaged.
  """
  config = read_config(workdir)
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise FileNotFoundError(f"no checkpoint in {directory}")
  ckpt = Checkpointer(str(directory), writable=False)
  try:
    if step is None:
      restored = ckpt.restore_latest(None)
      if restored is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
      state, step = restored
    else:
      state = ckpt.restore(None, step)
  finally:
    ckpt.close()
  return config, state, int(step)


def eval_variables(state: dict[str, Any]) -> dict[str, Any]:
  """`{"params": ..., **collections}` of a saved train state (the EMA parameters if kept)."""
  params = state["ema_params"] if state.get("ema_params") else state["params"]
  return {"params": params, **(state.get("collections") or {})}
