"""Checkpoints under bit rot, stray folders, rotation and unusable directories (issue 14.4-5)."""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess

import numpy as np
import pytest

from jaxcomp import checkpoint


def _state(value: float) -> dict:
  return {"params": {"w": np.full((64, 32), value, np.float32), "b": np.arange(7.0) + value},
          "step": np.int32(value)}


def _saved(tmp_path: pathlib.Path, steps=(10, 20), keep=None) -> checkpoint.Checkpointer:
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=keep)
  for s in steps:
    ckpt.save(s, _state(float(s)))
  return ckpt


def _files(path: pathlib.Path) -> list[pathlib.Path]:
  return sorted(f for f in path.rglob("*") if f.is_file() and f.name != checkpoint.CHECKSUMS)


def test_every_single_bit_flip_is_detected_and_the_older_checkpoint_used(tmp_path, caplog):
  # Issue 14.5: of 12 single-bit flips in checkpoint data, 3 restored silently.
  ckpt = _saved(tmp_path)
  newest = tmp_path / "checkpoints" / "20"
  pristine = {f: f.read_bytes() for f in _files(newest)}
  rng = np.random.default_rng(0)
  files = list(pristine)
  for i in range(24):            # 2 flips per file on average, every file hit at least once
    f = files[i % len(files)]
    raw = bytearray(pristine[f])
    raw[rng.integers(len(raw))] ^= 1 << int(rng.integers(8))
    f.write_bytes(bytes(raw))
    assert "checksum mismatch" in checkpoint.verify(newest), f
    with pytest.raises(checkpoint.CheckpointError, match="step 20 .* is damaged"):
      ckpt.restore(None, 20)
    f.write_bytes(pristine[f])
  assert checkpoint.verify(newest) is None
  # Restoring "the latest" from a damaged newest falls back, says so, and (writable) sets
  # the damaged folder aside; a reader (read_run) only warns.
  f = files[0]
  f.write_bytes(pristine[f][:-1])
  reader = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), writable=False)
  with caplog.at_level(logging.WARNING):
    state, step = reader.restore_latest(None)
  assert step == 10 and np.all(state["params"]["w"] == 10.0)
  assert "step 20: checksum mismatch" in caplog.text and newest.exists()
  state, step = ckpt.restore_latest(None)
  assert step == 10 and not newest.exists() and (tmp_path / "checkpoints" / "20.damaged").exists()


def test_missing_files_and_unreadable_checksums_are_damage(tmp_path):
  ckpt = _saved(tmp_path, steps=(10,))
  step = tmp_path / "checkpoints" / "10"
  victim = _files(step)[-1]
  content = victim.read_bytes()
  victim.unlink()
  assert "missing" in checkpoint.verify(step)
  victim.write_bytes(content)
  (step / checkpoint.CHECKSUMS).write_text("{not json")
  assert "unreadable" in checkpoint.verify(step)
  with pytest.raises(checkpoint.CheckpointError, match="can be restored"):
    ckpt.restore_latest(None)


def test_stray_and_incomplete_folders_are_skipped(tmp_path, caplog):
  # Issue 14.5: a stray `999/` or an empty `30/` crashed every restart.
  ckpt = _saved(tmp_path)
  (tmp_path / "checkpoints" / "30").mkdir()
  (tmp_path / "checkpoints" / "999").mkdir()
  (tmp_path / "checkpoints" / "999" / "notes.txt").write_text("x")
  assert ckpt.all_steps() == [10, 20] and ckpt.latest_step() == 20
  with caplog.at_level(logging.WARNING):
    state, step = checkpoint.Checkpointer(str(tmp_path / "checkpoints"),
                                          writable=False).restore_latest(None)
  assert step == 20 and np.all(state["params"]["b"] == np.arange(7.0) + 20)
  assert "step 999: not a complete checkpoint; step 30: not a complete checkpoint" in caplog.text
  with pytest.raises(checkpoint.CheckpointError, match="step 30 .* not a complete checkpoint"):
    ckpt.restore(None, 30)
  with pytest.raises(FileNotFoundError, match="no checkpoint at step 7"):
    ckpt.restore(None, 7)


def test_rotation_never_removes_the_newest_good_checkpoint(tmp_path):
  ckpt = _saved(tmp_path, steps=(10, 20, 30), keep=2)
  assert ckpt.all_steps() == [20, 30]
  # A complete-looking checkpoint newer than the run (left by another run) is not
  # counted: with keep=1 the step just saved must survive its own rotation.
  (tmp_path / "checkpoints" / "999").mkdir()
  (tmp_path / "checkpoints" / "999" / "_CHECKPOINT_METADATA").write_text("{}")
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=1)
  ckpt.save(40, _state(40.0))
  assert ckpt.all_steps() == [40, 999]
  np.testing.assert_array_equal(ckpt.restore(None, 40)["params"]["w"], 40.0)
  # Saving a step whose folder is damaged replaces it (the damaged one is kept aside).
  (tmp_path / "checkpoints" / "50").mkdir()
  ckpt.save(50, _state(50.0))
  assert checkpoint.verify(tmp_path / "checkpoints" / "50") is None
  assert (tmp_path / "checkpoints" / "50.damaged").is_dir()


def test_checkpoints_without_checksums_still_restore(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top  (a plain orbax save)
  with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
    manager.save(5, args=ocp.args.StandardSave(_state(5.0)))
    manager.wait_until_finished()
  assert checkpoint.verify(tmp_path / "checkpoints" / "5") is None
  (tmp_path / "config.json").write_text("{}")
  _, state, step = checkpoint.read_run(tmp_path)
  assert step == 5 and np.all(state["params"]["w"] == 5.0)


def test_a_directory_that_is_a_file_fails_at_once(tmp_path):
  (tmp_path / "checkpoints").write_text("x")
  with pytest.raises(checkpoint.CheckpointError, match="not a directory"):
    checkpoint.Checkpointer(str(tmp_path / "checkpoints"))


def _mount_tmpfs(path: pathlib.Path, options: str) -> bool:
  path.mkdir(parents=True, exist_ok=True)
  try:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, timeout=30).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


@pytest.fixture
def small_disk(tmp_path):
  """A 64 KiB file system (tmpfs; needs root), or skip."""
  path = tmp_path / "small"
  if not _mount_tmpfs(path, "size=64k"):
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  yield path
  subprocess.run(["umount", str(path)], capture_output=True, timeout=30)


def test_a_read_only_directory_fails_at_once(tmp_path):
  path = tmp_path / "ro"
  if os.geteuid() != 0:
    path.mkdir()
    path.chmod(0o555)
  elif not _mount_tmpfs(path, "ro,size=64k"):
    pytest.skip("root ignores permissions and no read-only tmpfs can be mounted")
  try:
    with pytest.raises(checkpoint.CheckpointError, match="cannot write checkpoints"):
      checkpoint.Checkpointer(str(path))
    checkpoint.Checkpointer(str(path), writable=False).close()   # reading needs no write
  finally:
    if os.geteuid() == 0:
      subprocess.run(["umount", str(path)], capture_output=True, timeout=30)


def test_a_full_disk_fails_the_save_at_once(small_disk):
  ckpt = checkpoint.Checkpointer(str(small_disk / "checkpoints"))
  with pytest.raises(checkpoint.CheckpointError, match="saving the checkpoint of step 1 .*"):
    noise = np.random.default_rng(0).random((256, 256), np.float32)   # 256 KiB, incompressible
    ckpt.save(1, {"w": noise})
  ckpt.close()
  assert ckpt.all_steps() == []
