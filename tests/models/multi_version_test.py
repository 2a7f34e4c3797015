"""Tests of the 11-input network (paper 003): shapes, the shared trunk, fusion, freezing, loading.

Expected values: the trunk applied on its own to each version (a shared trunk
must reproduce it for every version), and the head applied by hand to one
version's pre_logits (softmax weights sum to 1, so V identical versions fuse to
that vector whatever the learned weights).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from jaxcomp.models import get_model
from jaxcomp.models.multi_version import MultiVersionNet, load_trunk

B, V, K, D = 2, 3, 5, 4


def _equal(a, b) -> bool:
  return jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.all(u == v)), a, b))


def _trunk_vars(variables):
  return {k: c["trunk"] for k, c in variables.items()}


@pytest.fixture(scope="module")
def trunk():
  return get_model("convnet", num_classes=7, depth=1, width=D, head_pool="global")


@pytest.fixture(scope="module")
def apply_trunk(trunk):
  return jax.jit(trunk.apply)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
  return np.random.default_rng(0).normal(size=(B, V, 6, 6, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def nets(trunk, x) -> dict:
  """fusion -> (net, variables)."""
  out = {}
  for fusion in ("weighted", "concat"):
    net = MultiVersionNet(trunk, num_classes=K, fusion=fusion)
    out[fusion] = net, jax.jit(net.init)(jax.random.key(0), x)
  return out


@pytest.mark.parametrize("fusion,width", [("weighted", D), ("concat", V * D)])
def test_shapes_and_the_trunk_is_shared(trunk, apply_trunk, x, nets, fusion, width):
  net, variables = nets[fusion]
  logits, aux = jax.jit(net.apply)(variables, x)
  assert logits.shape == (B, K) and logits.dtype == jnp.float32
  assert aux["pre_logits"].shape == (B, width)
  assert aux["features"].shape == (B, V, 6, 6, D)
  assert variables["params"]["head"]["kernel"].shape == (width, K)
  # One trunk: its variables have the stand-alone classifier's structure, and
  # applying them alone to each version gives that version's features.
  alone = jax.eval_shape(trunk.init, jax.random.key(0), x[:, 0])
  assert jax.tree.structure(alone) == jax.tree.structure(_trunk_vars(variables))
  for v in range(V):
    np.testing.assert_allclose(aux["features"][:, v],
                               apply_trunk(_trunk_vars(variables), x[:, v])[1]["features"],
                               rtol=1e-6, atol=1e-6)
  if fusion == "weighted":
    np.testing.assert_allclose(aux["version_weights"], np.full(V, 1 / V), rtol=1e-6)


def test_identical_versions_fuse_to_one_versions_features(apply_trunk, x, nets):
  net, variables = nets["weighted"]
  same = np.repeat(x[:, :1], V, axis=1)
  variables = {**variables, "params": {**variables["params"],
                                       "version_logits": jnp.array([2.0, -1.0, 0.5])}}
  logits, aux = jax.jit(net.apply)(variables, same)
  _, one = apply_trunk(_trunk_vars(variables), x[:, 0])
  head = variables["params"]["head"]
  np.testing.assert_allclose(aux["pre_logits"], one["pre_logits"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logits, one["pre_logits"] @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-5)
  w = np.exp([2.0, -1.0, 0.5])
  np.testing.assert_allclose(aux["version_weights"], w / w.sum(), rtol=1e-6)


def test_trunk_freezes_by_regex_and_keeps_its_batch_stats(trunk, x, nets):
  net, variables = nets["weighted"]
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  frozen = {p: bool(re.match(r"^trunk/", p)) for p in flat}
  assert sorted(p for p, f in frozen.items() if not f) == [
      "head/bias", "head/kernel", "version_logits"]
  labels = traverse_util.unflatten_dict({p: "frozen" if f else "train" for p, f in frozen.items()},
                                        sep="/")
  tx = optax.multi_transform({"frozen": optax.set_to_zero(), "train": optax.sgd(0.1)}, labels)
  y = np.arange(B) % K

  @jax.jit
  def step(variables, opt_state):
    def loss(params):
      (logits, _), updates = net.apply({**variables, "params": params}, x, train=True,
                                       mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates
    grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
    new, opt_state = tx.update(grads, opt_state, variables["params"])
    return {**updates, "params": optax.apply_updates(variables["params"], new)}, grads

  after, grads = step(variables, tx.init(variables["params"]))
  # train_trunk=False: no gradient reaches the trunk (stop_gradient), the head's is nonzero.
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["trunk"]))
  assert np.abs(np.asarray(grads["head"]["kernel"])).max() > 0
  assert _equal(after["params"]["trunk"], variables["params"]["trunk"])
  assert not _equal(after["params"]["head"], variables["params"]["head"])
  # train_trunk=False: BatchNorm ran on running averages, its statistics unchanged.
  assert _equal(after["batch_stats"], variables["batch_stats"])
  trainable = MultiVersionNet(trunk, num_classes=K, train_trunk=True)
  _, moved = jax.jit(functools.partial(trainable.apply, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert not _equal(moved["batch_stats"], variables["batch_stats"])


def test_load_trunk(trunk, apply_trunk, x, nets):
  net, variables = nets["concat"]
  trained = jax.jit(trunk.init)(jax.random.key(1), x[:, 0])
  loaded = load_trunk(variables, trained)
  for k in ("params", "batch_stats"):
    assert _equal(loaded[k]["trunk"], trained[k])
  assert loaded["params"]["head"] is variables["params"]["head"]
  logits, _ = jax.jit(net.apply)(loaded, x)
  pre = np.stack([apply_trunk(trained, x[:, v])[1]["pre_logits"] for v in range(V)], 1)
  head = variables["params"]["head"]
  np.testing.assert_allclose(logits, pre.reshape(B, -1) @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-5)
  wider = get_model("convnet", num_classes=7, depth=1, width=D + 1, head_pool="global")
  with pytest.raises(ValueError, match="do not match"):
    load_trunk(variables, jax.eval_shape(wider.init, jax.random.key(1), x[:, 0]))
  with pytest.raises(ValueError, match="collections"):
    load_trunk(variables, {"params": trained["params"]})


def test_bad_inputs(trunk, x):
  with pytest.raises(ValueError, match="fusion must be"):
    jax.eval_shape(MultiVersionNet(trunk, num_classes=K, fusion="mean").init,
                   jax.random.key(0), x)
  with pytest.raises(ValueError, match="B, V, H, W, C"):
    jax.eval_shape(MultiVersionNet(trunk, num_classes=K).init, jax.random.key(0), x[:, 0])
