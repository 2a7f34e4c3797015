"""The trainer under divergence, config drift on resume, damaged checkpoints and failing disks.

Each test reproduces an item of issue 14 on the toy task of conftest.py (a
Dense-BatchNorm-Dense classifier: compiling and running it takes a few seconds;
the tests that need three runs are marked slow, their pieces are also checked
faster here and in checkpoint_reliability_test.py).
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import threading
import time

import jax
import numpy as np
import pytest

from jaxcomp import checkpoint
from jaxcomp import config_lib
from jaxcomp import train
from jaxcomp import writers


def _steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _finite(workdir: pathlib.Path, step: int) -> bool:
  state = checkpoint.read_run(workdir, step=step)[1]
  return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state)
             if np.issubdtype(np.asarray(x).dtype, np.floating))


def _lingering_threads() -> list[str]:
  """Non-daemon threads still alive: they would hold the process open at exit."""
  deadline = time.monotonic() + 5
  while True:
    alive = [t.name for t in threading.enumerate()
             if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not alive or time.monotonic() > deadline:
      return alive
    time.sleep(0.1)


def test_an_infinite_norm_stops_the_run_before_it_is_saved(toy, toy_config, tmp_path):
  # Issue 14.6: with lr = 1e12 the loss stays finite (5.9e22 at step 2, measured)
  # while the parameters overflow: step 1's update gives |params| ~ 1e11, step 2's
  # an infinite parameter norm. The run used to go on and save inf parameters,
  # and keep=1 rotation deleted the last good checkpoint (step 1).
  c = toy_config(num_steps=12, checkpoint_every_steps=1, keep_checkpoints=1)
  c.optim.learning_rate = 1e12
  with pytest.raises(FloatingPointError, match=r"non-finite loss or state at step 2 .*"
                     r"param_norm=inf\). stopping. The last good checkpoint is step 1 in "):
    train.train_and_evaluate(c, str(tmp_path))
  assert _steps(tmp_path) == [1] and _finite(tmp_path, 1)


def test_the_stop_message_says_when_there_is_no_checkpoint(toy, toy_config, tmp_path):
  # Issue 14.7: the message named a step-0 checkpoint that does not exist.
  c = toy_config(num_steps=12, checkpoint_every_steps=10)
  c.optim.learning_rate = 1e12
  with pytest.raises(FloatingPointError, match="no last good checkpoint .none was saved"):
    train.train_and_evaluate(c, str(tmp_path))
  assert _steps(tmp_path) == []


def test_divergence_keeps_and_names_the_last_good_checkpoint(toy, toy_config, tmp_path):
  # Two good steps, then a gradient of inf from step 3 on (the loss stays finite):
  # keep=1 rotation must leave checkpoint 2, and the message must name it.
  def poison(state):
    params = jax.tree.map(lambda x: x, state.params)
    params["Dense_1"]["kernel"] = params["Dense_1"]["kernel"].at[0, 0].set(np.inf)
    return state.replace(params=params)

  toy.events = {3: poison}
  c = toy_config(num_steps=8, checkpoint_every_steps=2, keep_checkpoints=1)
  with pytest.raises(FloatingPointError) as e:
    train.train_and_evaluate(c, str(tmp_path))
  assert f"last good checkpoint is step 2 in {tmp_path / 'checkpoints'}" in str(e.value)
  assert _steps(tmp_path) == [2] and _finite(tmp_path, 2)


def test_a_nan_outside_the_parameters_is_not_saved(toy, toy_config, tmp_path):
  # BatchNorm statistics do not enter the training loss: only the check of the
  # whole state before a save stops this one.
  def poison(state):
    stats = jax.tree.map(lambda x: x * np.nan, state.collections)
    return state.replace(collections=stats)

  toy.events = {6: poison}
  with pytest.raises(FloatingPointError, match="non-finite value in the train state"):
    train.train_and_evaluate(toy_config(), str(tmp_path))
  assert _steps(tmp_path) == [4] and _finite(tmp_path, 4)


def test_resuming_with_another_config_is_refused(toy, toy_config, tmp_path):
  # Issue 14.11: another batch size or seed continued silently and rewrote config.json.
  train.train_and_evaluate(toy_config(num_steps=4), str(tmp_path))
  saved = (tmp_path / "config.json").read_text()
  changes = [
      (lambda c: setattr(c.train, "batch_size", 32), "train.batch_size: 16 -> 32"),
      (lambda c: setattr(c, "seed", 1), "seed: 0 -> 1"),
      (lambda c: setattr(c.optim, "name", "adam"), "optim.name: 'momentum' -> 'adam'"),
      (lambda c: setattr(c.model, "width", 2), "model.width: 0 -> 2"),
  ]
  for change, key in changes:       # each refused at start-up, before anything compiles
    c = toy_config(num_steps=8)
    change(c)
    with pytest.raises(config_lib.ConfigError, match="allow_config_change") as e:
      train.train_and_evaluate(c, str(tmp_path))
    assert key in str(e.value)
    assert (tmp_path / "config.json").read_text() == saved     # not rewritten
    assert _steps(tmp_path) == [4]


def test_metric_rows_after_the_resumed_step_and_a_torn_line_are_dropped(tmp_path):
  # Issue 14.10, at the writer: duplicates at every resume; a torn last line broke the end.
  writer = writers.MetricWriter(tmp_path)
  for step in (1, 2, 3):
    writer.write(step, "train", {"loss": float(step)})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "split": "tr')                # a crash while appending
  writers.MetricWriter(tmp_path, resume_step=2).close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2]


@pytest.mark.slow
def test_allowed_config_change_and_longer_runs_resume(toy, toy_config, tmp_path, caplog):
  train.train_and_evaluate(toy_config(num_steps=4), str(tmp_path))
  longer = train.train_and_evaluate(toy_config(num_steps=6), str(tmp_path))   # not a drift
  assert longer["resumed_from_step"] == 4
  c = toy_config(num_steps=8, allow_config_change=True)
  c.seed = 3
  with caplog.at_level(logging.WARNING):
    summary = train.train_and_evaluate(c, str(tmp_path))
  assert summary["resumed_from_step"] == 6 and summary["final_step"] == 8
  assert "seed: 0 -> 3" in caplog.text
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 3


@pytest.mark.slow
def test_damaged_and_stray_checkpoints_fall_back_to_the_newest_good_one(toy, toy_config,
                                                                        tmp_path, caplog):
  full = train.train_and_evaluate(toy_config(num_steps=12), str(tmp_path / "full"))
  work = tmp_path / "run"
  train.train_and_evaluate(toy_config(num_steps=8), str(work))
  ckpts = work / "checkpoints"
  # Bit rot in the newest checkpoint's array data, an empty and a stray numeric folder.
  data = max((f for f in (ckpts / "8").rglob("*") if f.is_file() and "/d/" in f.as_posix()),
             key=lambda f: f.stat().st_size)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0x04
  data.write_bytes(bytes(raw))
  (ckpts / "30").mkdir()
  (ckpts / "999").mkdir()
  (ckpts / "999" / "junk").write_text("not a checkpoint")
  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(toy_config(num_steps=12), str(work))
  assert resumed["resumed_from_step"] == 4 and resumed["final_step"] == 12
  assert "checksum mismatch" in caplog.text and "step 999: not a complete checkpoint" in caplog.text
  assert {"8.damaged", "30.damaged", "999.damaged"} <= {p.name for p in ckpts.iterdir()}
  # The fallback run computed exactly what an uninterrupted one does (CPU, tolerance 0).
  a, b = (checkpoint.read_run(w, step=12)[1] for w in (tmp_path / "full", work))
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
  # metrics.jsonl: rows after step 4 were dropped on resume, so every step is there once.
  rows = [r["step"] for r in writers.read_metrics(work) if r["split"] == "train"]
  assert rows == list(range(1, 13)) and full["final_step"] == 12


@pytest.mark.slow
def test_a_torn_metrics_line_is_tolerated(toy, toy_config, tmp_path):
  train.train_and_evaluate(toy_config(num_steps=4), str(tmp_path))
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "split": "tr')                # a crash while appending
  summary = train.train_and_evaluate(toy_config(num_steps=8), str(tmp_path))
  assert json.loads((tmp_path / "summary.json").read_text())["final_step"] == 8
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  rows = [json.loads(l) for l in lines]                 # every line parses
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 9))
  assert summary["resumed_from_step"] == 4


def test_an_unwritable_checkpoint_directory_fails_at_start(toy, toy_config, tmp_path):
  (tmp_path / "checkpoints").write_text("a file where the checkpoints go")
  start = time.monotonic()
  with pytest.raises(checkpoint.CheckpointError, match="not a directory"):
    train.train_and_evaluate(toy_config(), str(tmp_path))
  assert time.monotonic() - start < 60 and not _lingering_threads()


def test_a_save_that_fails_mid_run_stops_at_once(toy, toy_config, tmp_path):
  # Issue 14.4: the checkpoint folder turns into a file after start-up; orbax's
  # save fails, and its background threads used to wait 5 minutes for the folder
  # before the process could exit.
  def break_disk(task):
    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "checkpoints").write_text("x")

  toy.hooks = {2: break_disk}                           # before step 3; saves at 4
  start = time.monotonic()
  with pytest.raises(checkpoint.CheckpointError, match="saving the checkpoint of step 4"):
    train.train_and_evaluate(toy_config(), str(tmp_path))
  assert time.monotonic() - start < 120
  assert not _lingering_threads()
