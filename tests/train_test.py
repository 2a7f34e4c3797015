"""The trainer on a toy task: resume exactness, NaN stop, SIGTERM, grad accumulation.

The toy task (a Dense-BatchNorm-Dense classifier on synthetic Gaussian data,
batch s a function of (seed, s)) isolates the loop from data and models; the
end-to-end run on real data is in main_test.py.
"""

import json
import os
import pathlib
import signal
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp import config_lib
from jaxcomp import parallel
from jaxcomp import train
from jaxcomp.tasks import base as tasks_base


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(16)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x))


class ToyTask:
  steps_per_epoch = 4

  def __init__(self, config, mesh):
    self.config, self.mesh, self.model = config, mesh, _Net()
    self.w_true = np.random.default_rng(123).normal(size=(8, 3))
    self.delay = 0.0
    self.sigterm_at = None  # send SIGTERM to ourselves when fetching this batch

  def _batch(self, seed, step, size):
    rng = np.random.default_rng([seed, step])
    x = rng.normal(size=(size, 8)).astype(np.float32)
    return {"x": x, "label": np.argmax(x @ self.w_true, -1).astype(np.int32)}

  def train_iterator(self, *, seed, start_step):
    step = start_step
    while True:
      time.sleep(self.delay)
      if step == self.sigterm_at:
        os.kill(os.getpid(), signal.SIGTERM)
      yield self._batch(seed, step, self.config.train.batch_size)
      step += 1

  def init_variables(self, rng, batch):
    return dict(self.model.init(rng, jnp.asarray(batch["x"]), train=False))

  def loss(self, variables, batch, rng, *, train):
    del rng
    (logits, updates) = self.model.apply(variables, batch["x"], train=True,
                                         mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, ({"loss": loss}, updates)

  def param_labels(self, params):
    return jax.tree.map(lambda _: "default", params)

  def evaluate(self, variables, mesh):
    b = self._batch(999, 0, 64)
    logits = self.model.apply(variables, b["x"], train=False)
    return {"accuracy": float((np.argmax(logits, -1) == b["label"]).mean())}


@pytest.fixture
def toy(monkeypatch):
  made = []

  def get_task(config, mesh):
    made.append(ToyTask(config, mesh))
    return made[-1]

  monkeypatch.setattr(tasks_base, "get_task", get_task)
  return made


def _config(**train):
  c = config_lib.base_config()
  c.train.batch_size = 16
  c.train.num_steps = 8
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = 4
  c.train.progress_bar = False
  c.optim = config_lib.optimizer_config(name="momentum", learning_rate=0.1, schedule="cosine",
                                        weight_decay=1e-4)
  for k, v in train.items():
    c.train[k] = v
  return c


def _params(workdir, step):
  from jaxcomp import checkpoint
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  restored = ckpt.restore(None, step)
  ckpt.close()
  return restored


def test_resume_matches_uninterrupted_run_exactly(toy, tmp_path):
  full = train.train_and_evaluate(_config(), str(tmp_path / "full"))
  assert full["final_step"] == 8
  # Preempt the second run while it fetches batch 4, then start it again.
  interrupted = tmp_path / "part"
  toy.clear()
  orig = tasks_base.get_task
  def preempting(config, mesh):
    task = orig(config, mesh)
    task.sigterm_at = 4
    return task
  tasks_base.get_task = preempting
  try:
    stopped = train.train_and_evaluate(_config(), str(interrupted))
  finally:
    tasks_base.get_task = orig
  assert stopped["preempted"] and stopped["final_step"] == 5
  resumed = train.train_and_evaluate(_config(), str(interrupted))
  assert resumed["resumed_from_step"] == 5 and resumed["final_step"] == 8
  a, b = _params(tmp_path / "full", 8), _params(interrupted, 8)
  # Same program, same inputs, CPU: bit-identical (tolerance 0).
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
  rows = [json.loads(l) for l in (interrupted / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 9))
  for name in ("config.json", "summary.json", "plots.png"):
    assert (interrupted / name).exists()


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(toy, tmp_path):
  c = _config(num_steps=40)
  c.optim.learning_rate = 1e30
  c.optim.schedule = "constant"
  with pytest.raises(FloatingPointError, match="non-finite loss .* last good checkpoint"):
    train.train_and_evaluate(c, str(tmp_path))
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  for s in steps:  # every kept checkpoint holds finite parameters
    leaves = jax.tree.leaves(_params(tmp_path, s)["params"])
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_sigterm_writes_checkpoint_and_returns_preempted(toy, tmp_path):
  c = _config(num_steps=10_000, checkpoint_every_steps=100_000)
  metrics = tmp_path / "metrics.jsonl"
  done = threading.Event()

  def preempt_once_training():  # like a scheduler, from outside the loop
    while not done.is_set():
      if metrics.exists() and metrics.stat().st_size > 0:
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.05)

  watcher = threading.Thread(target=preempt_once_training, daemon=True)
  watcher.start()
  try:
    summary = train.train_and_evaluate(c, str(tmp_path))
  finally:
    done.set()
    watcher.join()
  assert summary["preempted"]
  step = summary["final_step"]
  assert 0 < step < 10_000
  ckpts = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert step in ckpts


def test_grad_accumulation_equals_full_batch_without_batchnorm():
  # A model without mutable state: averaging micro-batch gradients is exactly
  # the full-batch gradient (up to float32 summation order, 1e-6).
  model = nn.Dense(3)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
  y = jnp.arange(16) % 3

  def loss_fn(variables, batch, rng, *, train):
    logits = model.apply(variables, batch["x"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, ({"loss": loss}, {})

  params = model.init(jax.random.PRNGKey(1), x)["params"]
  tx = optax.sgd(0.1)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, collections={},
                           opt_state=tx.init(params), ema_params={}, rng=jax.random.PRNGKey(2))
  outs = [jax.jit(lambda s, b, a=a: train.train_step(
      s, b, loss_fn=loss_fn, tx=tx, schedule=lambda _: 0.1, accum_steps=a))(
          state, {"x": x, "label": y}) for a in (1, 4)]
  jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, atol=1e-6),
               outs[0][0].params, outs[1][0].params)


def test_ema_tracks_params(toy, tmp_path):
  summary = train.train_and_evaluate(_config(ema_decay=0.5, num_steps=4), str(tmp_path))
  restored = _params(tmp_path, 4)
  assert jax.tree.structure(restored["ema_params"]) == jax.tree.structure(restored["params"])
  assert "eval" in summary


def test_one_and_eight_devices_give_same_step(toy):
  assert len(jax.devices()) == 8, "conftest forces 8 CPU devices"
  c = config_lib.validate(_config())
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.create_mesh(1, devices)
    task = ToyTask(c, mesh)
    trainer = train.Trainer(c, task, mesh)
    batch = task._batch(0, 0, 16)
    state = trainer.init_state(batch)
    state, metrics = trainer.step_fn(state, parallel.host_to_global(batch, mesh))
    results.append(jax.device_get((state.params, metrics)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), *results)
