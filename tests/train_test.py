"""The trainer on a toy task: resume exactness, NaN stop, SIGTERM, grad accumulation,
and the task contract (prepare, transforms, frozen groups, events across a resume).

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

from jaxcomp import checkpoint
from jaxcomp import config_lib
from jaxcomp import parallel
from jaxcomp import registry
from jaxcomp import train
from jaxcomp import writers
from jaxcomp.tasks import base as tasks_base


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(16)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x))


class ToyTask(tasks_base.Task):
  steps_per_epoch = 4

  def __init__(self, config, mesh):
    super().__init__(config, mesh)
    self.model = _Net()
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


# --- the task contract: prepare, transforms, a frozen group, events ---------------
PRETRAINED = 0.25   # the value `prepare` gives the frozen layer's kernel


@tasks_base.TASKS.register("toy_contract")
class ContractTask(ToyTask):
  """The toy task with every hook: `prepare` sets a "pretrained" first layer at step 0
  (frozen by the config's optimizer group), `gradient_transform` scales gradients, and
  an event every 3 steps shifts the head's bias."""
  sigterm_at_step = None      # class-wide, since the trainer builds the task itself

  def __init__(self, config, mesh):
    super().__init__(config, mesh)
    self.sigterm_at = ContractTask.sigterm_at_step
    self.prepared_at = []

  def prepare(self, state):
    self.prepared_at.append(int(state.step))
    if int(state.step) > 0:
      return state
    params = jax.tree.map(lambda x: x, state.params)
    params["Dense_0"]["kernel"] = jnp.full_like(params["Dense_0"]["kernel"], PRETRAINED)
    return state.replace(params=params)

  def gradient_transform(self):
    return optax.scale(0.5)

  def event_steps(self, total_steps):
    return tuple(range(3, total_steps + 1, 3))

  def on_step_end(self, step, state):
    params = jax.tree.map(lambda x: x, state.params)
    params["Dense_1"]["bias"] = params["Dense_1"]["bias"] + 0.01 * step
    return state.replace(params=params), {"event": "shift_head_bias", "by": 0.01 * step}


def _contract_config():
  c = _config(num_steps=10, checkpoint_every_steps=5)
  c.task = "toy_contract"
  c.optim_groups = (("^Dense_0/", "frozen"),)
  return c


def _state(workdir, step):
  return checkpoint.read_run(workdir, step=step)[1]


def _events(workdir):
  return [r for r in writers.read_metrics(workdir) if r["split"] == "event"]


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
  full = train.train_and_evaluate(_contract_config(), str(tmp_path / "full"))
  assert full["final_step"] == 10
  ContractTask.sigterm_at_step = 4            # while fetching batch 4: stops after step 5
  try:
    stopped = train.train_and_evaluate(_contract_config(), str(tmp_path / "part"))
  finally:
    ContractTask.sigterm_at_step = None
  assert stopped["preempted"] and stopped["final_step"] == 5
  resumed = train.train_and_evaluate(_contract_config(), str(tmp_path / "part"))
  assert resumed["resumed_from_step"] == 5 and resumed["final_step"] == 10
  a, b = _state(tmp_path / "full", 10), _state(tmp_path / "part", 10)
  # Parameters, optimizer state, batch statistics, step and key: bit-identical on CPU.
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
  # Events 3, 6, 9: the one before the stop is not run again, none after it is skipped.
  assert [e["step"] for e in _events(tmp_path / "full")] == [3, 6, 9]
  assert _events(tmp_path / "part") == _events(tmp_path / "full")
  # The frozen group: the prepared layer never moved, and has no optimizer state.
  np.testing.assert_array_equal(a["params"]["Dense_0"]["kernel"], PRETRAINED)
  assert not any("Dense_0" in str(path) for path, _ in
                 jax.tree_util.tree_flatten_with_path(a["opt_state"])[0])
  # The event changed what it should: the head's bias holds the three shifts.
  assert not np.allclose(a["params"]["Dense_1"]["bias"], 0.0)


def test_prepare_runs_once_per_process_after_init_or_restore(tmp_path):
  made = []
  original = tasks_base.get_task

  def recording(config, mesh):
    made.append(original(config, mesh))
    return made[-1]

  tasks_base.get_task = recording
  try:
    train.train_and_evaluate(_contract_config(), str(tmp_path))
    c = _contract_config()
    c.mode = "evaluate"
    train.train_and_evaluate(c, str(tmp_path))
  finally:
    tasks_base.get_task = original
  assert [t.prepared_at for t in made] == [[0], [10]]


def test_a_group_regex_that_matches_nothing_stops_at_start_up(tmp_path):
  c = _contract_config()
  c.optim_groups = (("^Dense_0/", "frozen"), ("^encoder/", "aux_optim"))
  with pytest.raises(config_lib.ConfigError, match=r"'\^encoder/' matches no parameter"):
    train.train_and_evaluate(c, str(tmp_path))


def test_registry_errors_list_the_known_names():
  with pytest.raises(KeyError, match="unknown task 'nope'; known: .*classification"):
    tasks_base.TASKS.get("nope")
  with pytest.raises(KeyError, match="unknown dataset 'nope'.*tfds:"):
    registry.by_kind("dataset").resolve("nope")
  c = _contract_config()
  c.data.augment = "mixup"
  c.model.name = "resnet21"
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert "data.augment='mixup' is not one of ('default', 'cifar'" in str(e.value)
  assert "model.name='resnet21' is not one of" in str(e.value) and "resnet20" in str(e.value)


def test_prefix_entries_resolve_to_the_rest_of_the_name():
  r = registry.Registry("toy prefix test")
  r.register("plain", 1)
  r.register_prefix("wrap:", 2)
  r.register_prefix("wrap:deep:", 3)
  assert r.resolve("plain") == (1, None)
  assert r.resolve("wrap:x:y") == (2, "x:y")
  assert r.resolve("wrap:deep:z") == (3, "z")          # the longest prefix wins
  assert "wrap:" in r and "other" not in r
  with pytest.raises(ValueError, match="already registered"):
    r.register("plain", 4)
