"""The RePr schedule (Algorithm 3) end to end through `train.train_and_evaluate`, on the
8 fake CPU devices of conftest: the events fire at S1, S1 + S2, ... with their per-layer
counts in metrics.jsonl, and a run stopped inside a pruned phase and resumed from its
checkpoint equals the uninterrupted run bit for bit, events included.

Model: C^3(8) on 64 images of the packaged CIFAR-10 (JPEG q75) sample, batch 16.
"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest

from jaxcomp import checkpoint
from jaxcomp import train
from jaxcomp import writers
from jaxcomp.tasks import base as tasks_base


def _config(make_config):
  """The shared tiny RePr config with a 10-step cosine run, checkpoints every 5 steps,
  a log row every step and no evaluation (one compile less per run)."""
  c = make_config(metric="random")     # events at steps 2, 4, 6, 8
  c.train.num_steps = 10
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = 5
  c.mode = "train"
  c.optim.schedule = "cosine"
  return c


@pytest.fixture
def stop_at(monkeypatch):
  """`stop_at[0] = k`: the next run sends itself SIGTERM while fetching training batch k
  (so it stops after step k + 1, as a preempted job does)."""
  holder = [None]
  original = tasks_base.get_task

  def get_task(config, mesh):
    task = original(config, mesh)
    inner, k = task.train_iterator, holder[0]

    def train_iterator(*, seed, start_step):
      for i, batch in enumerate(inner(seed=seed, start_step=start_step), start_step):
        if k is not None and i == k:
          os.kill(os.getpid(), signal.SIGTERM)
        yield batch

    task.train_iterator = train_iterator
    holder[0] = None
    return task

  monkeypatch.setattr(tasks_base, "get_task", get_task)
  return holder


def _events(workdir):
  return [r for r in writers.read_metrics(workdir) if r["split"] == "event"]


def test_stop_in_pruned_phase_and_resume_equals_uninterrupted(tmp_path, stop_at,
                                                                tiny_repr_config):
  full = train.train_and_evaluate(_config(tiny_repr_config), str(tmp_path / "full"))
  assert full["final_step"] == 10
  events = _events(tmp_path / "full")
  assert [(e["step"], e["event"], e["round"]) for e in events] == [
      (2, "repr_drop", 0), (4, "repr_reintroduce", 0),
      (6, "repr_drop", 1), (8, "repr_reintroduce", 1)]
  for e in events:   # floor(0.3 * 24) filters, counted per layer
    assert e.get("num_dropped", e.get("num_reinitialised")) == 7 == sum(e["counts"].values())
  rows = [r for r in writers.read_metrics(tmp_path / "full") if r["split"] == "train"]
  assert all(np.isfinite(r["ortho_sum"]) for r in rows)

  stop_at[0] = 2                   # stops after step 3: between the drop (2) and step 4
  stopped = train.train_and_evaluate(_config(tiny_repr_config), str(tmp_path / "part"))
  assert stopped["preempted"] and stopped["final_step"] == 3
  masks = checkpoint.read_run(tmp_path / "part", step=3)[1]["collections"]["repr_masks"]
  assert any(np.any(np.asarray(m) == 0) for m in jax.tree.leaves(masks))  # pruned phase
  resumed = train.train_and_evaluate(_config(tiny_repr_config), str(tmp_path / "part"))
  assert resumed["resumed_from_step"] == 3 and resumed["final_step"] == 10
  a = checkpoint.read_run(tmp_path / "full", step=10)[1]
  b = checkpoint.read_run(tmp_path / "part", step=10)[1]
  # Parameters, masks, optimizer state, batch statistics, step, key: bit-identical on CPU.
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
  # The drop before the stop is not run again; the later events all run.
  assert _events(tmp_path / "part") == events
