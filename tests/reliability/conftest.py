"""The toy task of tests/train_test.py for the trainer's reliability tests.

Batch s is a function of (seed, s), so resumed runs compute what uninterrupted
ones do; `ToyTask.hooks` lets a test act at a given batch (break the disk,
poison the state) without touching the trainer.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

from jaxcomp import config_lib
from jaxcomp.tasks import base as tasks_base

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import train_test  # noqa: E402  (tests/train_test.py: the trainer's toy task, reused)


@tasks_base.TASKS.register("reliability_toy")
class ToyTask(train_test.ToyTask):
  """train_test's toy task, registered, with hooks at batches and events at steps."""
  hooks: dict = {}           # batch index -> callable(task), run when the batch is fetched
  events: dict = {}          # step -> callable(state) -> state, run after that step

  def train_iterator(self, *, seed, start_step):
    step = start_step
    while True:
      if step in ToyTask.hooks:
        ToyTask.hooks[step](self)
      yield self._batch(seed, step, self.config.train.batch_size)
      step += 1

  def event_steps(self, total_steps):
    return tuple(s for s in ToyTask.events if s <= total_steps)

  def on_step_end(self, step, state):
    return ToyTask.events[step](state), {"event": "toy"}

  @staticmethod
  def config(**train) -> config_lib.ConfigDict:
    """train_test's config (8 steps, checkpoints every 4, `train` overrides) for this task,
    with a constant learning rate and no weight decay."""
    c = train_test._config(**train)
    c.task = "reliability_toy"
    c.optim = config_lib.optimizer_config(name="momentum", learning_rate=0.1, schedule="constant")
    return c


@pytest.fixture
def toy():
  """ToyTask with no hooks or events (cleared again after the test)."""
  ToyTask.hooks, ToyTask.events = {}, {}
  yield ToyTask
  ToyTask.hooks, ToyTask.events = {}, {}


@pytest.fixture
def toy_config():
  """`toy_config(**train_overrides)`: `ToyTask.config`."""
  return ToyTask.config
