"""The RePr task (`jaxcomp.tasks.repr_task`) through the trainer's `Trainer`: the drop
event masks (forward zeros, bit-identical parameters under SGD-momentum + weight decay),
the re-introduction resets only the dropped filters' entries, every ranking runs, the
loss options equal their formulas, one and 8 fake CPU devices agree, and bad configs fail
clearly.

Model: C^3(8) (`convnet`, width 8) on 64 images of the packaged CIFAR-10 (JPEG q75)
sample, batch 16.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxcomp import checkpoint
from jaxcomp import config_lib
from jaxcomp import parallel
from jaxcomp import train
from jaxcomp.models.classifier import ImageClassifier
from jaxcomp.repr import layers
from jaxcomp.tasks import repr_task
from jaxcomp.tasks.classification import to_unit_float


def _setup(config, devices=None):
  """Task, trainer, prepared state and batches on `devices` (default: one CPU device;
  the 8-device runs are `test_one_and_eight_devices_agree_through_an_event` and
  repr_schedule_test.py)."""
  mesh = parallel.create_mesh(1, devices or jax.devices()[:1])
  task = repr_task.ReprTask(config, mesh)
  trainer = train.Trainer(config, task, mesh)
  batches = task.train_iterator(seed=config.seed, start_step=0)
  first = next(batches)
  state = trainer.prepare(trainer.init_state(first))
  return task, trainer, state, batches, mesh


def _steps(trainer, state, batches, mesh, n):
  for _ in range(n):
    state, _ = trainer.step_fn(state, parallel.host_to_global(next(batches), mesh))
  return state


def _copy(trainer, state):
  """A copy the jitted step may donate without deleting `state`."""
  return jax.device_put(jax.tree.map(jnp.copy, state), trainer.state_shardings)


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _filter_entries(params, dropped):
  """{flattened key: [C] bool} of every parameter leaf belonging to a conv filter."""
  out = {}
  for path, layer in layers.filter_layers(params).items():
    keys = [layer.kernel] + ([layer.bias] if layer.bias else [])
    keys += [layer.bn + (n,) for n in ("scale", "bias")] if layer.bn else []
    for key in keys:
      out[key] = np.asarray(dropped[path])
  return out


def _get(tree, key):
  for k in key:
    tree = tree[k]
  return np.asarray(tree)


def _schedule(make_config, devices=None):
  """One device (default) or 8: train 2 steps, drop (ortho, 30 %), train 2 steps.

  Returns (task, trainer, the state before the drop, after it, 2 steps later, the record).
  """
  config = make_config()
  task, trainer, state, batches, mesh = _setup(config, devices)
  state = _steps(trainer, state, batches, mesh, 2)
  dropped_state, record = task.drop(2, state, 0)
  dropped_state = jax.device_put(dropped_state, trainer.state_shardings)
  later = _steps(trainer, _copy(trainer, dropped_state), batches, mesh, 2)
  return task, trainer, state, dropped_state, later, record


@pytest.fixture(scope="module")
def pruned(tiny_repr_config):
  return _schedule(tiny_repr_config)


def test_drop_record_counts_and_masks(pruned):
  task, _, _, state, _, record = pruned
  assert record["event"] == "repr_drop" and record["metric"] == "ortho"
  # floor(0.3 * 24 filters) = 7, the author's code's int(len * p / 100)
  assert record["num_dropped"] == 7 == sum(record["counts"].values())
  assert set(record["counts"]) == {"backbone/conv1", "backbone/conv2", "backbone/conv3"}
  dropped = repr_task.dropped_filters(state.params, state.collections[repr_task.MASKS])
  assert {p: int(d.sum()) for p, d in dropped.items()} == record["counts"]
  # The optimizer's masks are the forward pass's.
  is_mask_state = lambda x: isinstance(x, repr_task.masks_lib.MaskUpdatesState)
  opt_masks = [x for x in jax.tree.leaves(state.opt_state, is_leaf=is_mask_state)
               if is_mask_state(x)]
  assert len(opt_masks) == 1
  jax.tree.map(np.testing.assert_array_equal, opt_masks[0].masks,
               state.collections[repr_task.MASKS])


def test_dropped_filters_output_zero_and_do_not_move(pruned):
  task, _, _, before, after, _ = pruned
  dropped = repr_task.dropped_filters(before.params, before.collections[repr_task.MASKS])
  x = next(task.train_iterator(seed=0, start_step=0))["image"]
  variables = task.effective_variables({"params": after.params, **after.collections})
  r = task.responses(variables, jnp.asarray(x))
  for p, d in dropped.items():
    d = np.asarray(d)
    assert np.all(np.asarray(r[p])[..., d] == 0), p
    assert np.any(np.asarray(r[p])[..., ~d] != 0), p
  # SGD-momentum + weight decay ran 2 steps: dropped entries bit-identical, kept ones moved.
  for key, d in _filter_entries(before.params, dropped).items():
    old, new = _get(before.params, key), _get(after.params, key)
    np.testing.assert_array_equal(old[..., d].view(np.uint32), new[..., d].view(np.uint32))
    assert np.all(np.any((old != new)[..., ~d].reshape(-1, (~d).sum()), axis=0)), key


def test_reintroduction_resets_dropped_entries_only(pruned):
  task, _, _, _, state, _ = pruned
  masks = state.collections[repr_task.MASKS]
  dropped = repr_task.dropped_filters(state.params, masks)
  new, record = task.reintroduce(4, state, 0)
  assert record["event"] == "repr_reintroduce" and record["num_reinitialised"] == 7
  entries = _filter_entries(state.params, dropped)
  # Parameters: dropped filters' kernels orthogonal to the kept ones, biases 0, BN (1, 0);
  # every other entry bit-identical.
  old_p, new_p = _flat(state.params), _flat(new.params)
  changed = {jax.tree_util.keystr(tuple(jax.tree_util.DictKey(k) for k in key)): d
             for key, d in entries.items()}
  for k in old_p:
    d = changed.get(k, np.zeros(old_p[k].shape[-1:], bool))
    np.testing.assert_array_equal(old_p[k][..., ~d], new_p[k][..., ~d], err_msg=k)
  for path, layer in layers.filter_layers(state.params).items():
    d = np.asarray(dropped[path])
    if not d.any():
      continue
    w = _get(new.params, layer.kernel).reshape(-1, d.size).T
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    assert np.max(np.abs(w[d] @ w[~d].T)) < 1e-5, path
    np.testing.assert_array_equal(_get(new.params, layer.bias)[d], 0.0)
    np.testing.assert_array_equal(_get(new.params, layer.bn + ("scale",))[d], 1.0)
    np.testing.assert_array_equal(_get(new.params, layer.bn + ("bias",))[d], 0.0)
    stats = new.collections["batch_stats"]
    old_stats = state.collections["batch_stats"]
    for name, value in (("mean", 0.0), ("var", 1.0)):
      np.testing.assert_array_equal(_get(stats, layer.bn + (name,))[d], value)
      np.testing.assert_array_equal(_get(stats, layer.bn + (name,))[~d],
                                    _get(old_stats, layer.bn + (name,))[~d])
  # Masks back to all ones, in both places.
  for m in jax.tree.leaves(new.collections[repr_task.MASKS]):
    np.testing.assert_array_equal(m, 1.0)
  # Optimizer state: momentum of dropped entries 0, the rest bit-identical.
  old_o, new_o = _flat(state.opt_state), _flat(new.opt_state)
  n_reset = 0
  for k in old_o:
    if ".masks" in k:
      np.testing.assert_array_equal(new_o[k], 1.0)
      continue
    key = next((c for c in changed if k.endswith(c)), None)
    if key is None or old_o[k].ndim == 0:
      np.testing.assert_array_equal(old_o[k], new_o[k], err_msg=k)
      continue
    d = changed[key]
    np.testing.assert_array_equal(new_o[k][..., d], 0.0)
    np.testing.assert_array_equal(old_o[k][..., ~d], new_o[k][..., ~d])
    n_reset += int(np.any(old_o[k][..., d] != 0))
  assert n_reset > 0      # weight decay had moved the dropped filters' momentum
  # Step, key, EMA: untouched.
  for name in ("step", "rng", "ema_params"):
    jax.tree.map(np.testing.assert_array_equal, getattr(state, name), getattr(new, name))


def test_official_reinit_through_the_task(pruned, tiny_repr_config):
  _, _, _, _, state, _ = pruned
  task = repr_task.ReprTask(tiny_repr_config(reinit="official"),
                            parallel.create_mesh(1, jax.devices()[:1]))
  dropped = repr_task.dropped_filters(state.params, state.collections[repr_task.MASKS])
  new, record = task.reintroduce(4, state, 0)
  assert record["num_reinitialised"] == 7
  for path, layer in layers.filter_layers(state.params).items():
    d = np.asarray(dropped[path])
    old_k, new_k = _get(state.params, layer.kernel), _get(new.params, layer.kernel)
    np.testing.assert_array_equal(old_k[..., ~d], new_k[..., ~d])
    # The author's code: dropped filters take their unit-norm column of the layer's Q.
    norms = np.linalg.norm(new_k.reshape(-1, d.size)[:, d], axis=0)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


@pytest.mark.slow   # a second compile on 8 devices; repr_schedule_test runs on 8 by default
def test_one_and_eight_devices_agree_through_an_event(pruned, tiny_repr_config):
  assert len(jax.devices()) == 8, "conftest forces 8 CPU devices"
  task1, _, _, _, state1, record1 = pruned
  task8, _, _, _, state8, record8 = _schedule(tiny_repr_config, jax.devices())
  assert record1["counts"] == record8["counts"]
  out = [jax.device_get(task.reintroduce(4, state, 0)[0].params)
         for task, state in ((task1, state1), (task8, state8))]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), *out)


@pytest.mark.parametrize("metric", sorted(repr_task.RANKINGS.names()))
def test_every_ranking_runs_in_the_task(pruned, metric, tiny_repr_config):
  _, _, state, _, _, _ = pruned
  task = repr_task.ReprTask(tiny_repr_config(metric=metric, rank_batches=1, exclude_first=True),
                            parallel.create_mesh(1, jax.devices()[:1]))
  dropped, record = task.drop(2, state, 0)
  assert record["counts"]["backbone/conv1"] == 0          # excluded
  assert record["num_dropped"] == int(0.3 * 16)
  if metric == "oracle":
    return
  # The ranking is a function of the state and the step: the same drop again.
  again, _ = task.drop(2, state, 0)
  jax.tree.map(np.testing.assert_array_equal, again.collections[repr_task.MASKS],
               dropped.collections[repr_task.MASKS])


def test_loss_options_equal_their_formulas(pruned, tmp_path, tiny_repr_config):
  # A teacher: the 2-step state of the fixture, saved as a run directory.
  _, trainer, teacher_state, _, _, _ = pruned
  ckpt = checkpoint.Checkpointer(str(tmp_path / "teacher" / "checkpoints"))
  ckpt.save(2, teacher_state)
  ckpt.close()
  (tmp_path / "teacher" / "config.json").write_text(trainer.config.to_json_best_effort())
  config = tiny_repr_config(ortho_loss_weight=0.01, teacher_checkpoint=str(tmp_path / "teacher"),
                            kd_weight=0.7, kd_temperature=3.0)
  task = repr_task.ReprTask(config, parallel.create_mesh(1, jax.devices()[:1]))
  params = jax.tree.map(lambda x: 1.5 * x, teacher_state.params)  # a student, not the teacher
  batch = next(task.train_iterator(seed=0, start_step=0))
  variables = {"params": params, **teacher_state.collections}
  loss, (metrics, _) = jax.jit(lambda v, b: task.loss(v, b, jax.random.key(0), train=False))(
      variables, batch)
  # Orthogonality loss: lambda * sum_l sum |W_hat W_hat^T - I| (Eq. 5.1), numpy float64.
  ol = 0.0
  for k in layers.conv_kernels(params).values():
    w = np.asarray(k, np.float64).reshape(-1, k.shape[-1]).T
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    ol += np.abs(w @ w.T - np.eye(len(w))).sum()
  np.testing.assert_allclose(metrics["ortho_loss"], 0.01 * ol, rtol=1e-5)
  # Distillation: T^2 KL(softmax(t / T) || softmax(s / T)) with scipy.
  model, tvars = task.teacher
  images = to_unit_float(jnp.asarray(batch["image"]))
  t = np.asarray(model.apply(tvars, images, train=False)[0], np.float64)
  s = np.asarray(task.model.apply(variables, images, train=False)[0], np.float64)
  kl = scipy.special.rel_entr(scipy.special.softmax(t / 3, axis=1),
                              scipy.special.softmax(s / 3, axis=1)).sum(axis=1).mean()
  np.testing.assert_allclose(metrics["distillation"], 9 * kl, rtol=1e-4)
  np.testing.assert_allclose(loss, 0.3 * metrics["cross_entropy"] + 0.7 * 9 * kl + 0.01 * ol,
                             rtol=1e-4)


def test_ortho_sum_is_eq_5_2_summed_over_filters_in_use():
  rng = np.random.default_rng(0)
  k = rng.standard_normal((3, 3, 2, 5)).astype(np.float32)
  k[..., 1] = 0.0                                  # a dropped filter
  w = k.reshape(-1, 5).T.astype(np.float64)[[0, 2, 3, 4]]
  w /= np.linalg.norm(w, axis=1, keepdims=True)
  p = np.abs(w @ w.T - np.eye(4))                  # the zero row/column contributes 0
  expected = p.sum() / 5                           # O_f = row sum / J, J = 5
  got = jax.jit(repr_task.ortho_sum)({"c": {"kernel": jnp.asarray(k)}})
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (dict(metric="nope"), "repr.metric='nope' is not one of"),
    (dict(fraction=1.0), "repr.fraction must be < 1"),
    (dict(fraction=0.0), "repr.fraction must be > 0"),
    (dict(reinit="qr"), "repr.reinit='qr' is not one of"),
    (dict(kd_weight=1.5), "repr.kd_weight must be <= 1"),
    (dict(rounds=-1), "repr.rounds must be >= 0"),
])
def test_bad_repr_config_fails_at_validation(overrides, message):
  c = config_lib.base_config()
  for k, v in overrides.items():
    c.repr[k] = v
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)


def test_bad_schedule_and_model_fail_clearly(tiny_repr_config):
  config = tiny_repr_config(rounds=3)     # 3 x (2 + 2) = 12 steps > 8
  task = repr_task.ReprTask(config, parallel.create_mesh(1))
  with pytest.raises(config_lib.ConfigError, match="end at step 12, after the run's 8"):
    task.event_steps(8)

  class Mlp(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1)), {}

  task.model = ImageClassifier(backbone=Mlp(), mean=task.model.mean, std=task.model.std)
  batch = next(task.train_iterator(seed=0, start_step=0))
  with pytest.raises(ValueError, match="task 'repr' needs a model with conv layers"):
    task.init_variables(jax.random.key(0), batch)
