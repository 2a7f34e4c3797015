"""jaxcomp.repr.masks: masks pair each conv with its BatchNorm, hold in the forward pass and
in the optimizer updates (SGD-momentum + weight decay, Adam), and optimizer moments reset
for dropped filters only, bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp import models
from jaxcomp.repr import layers, masks

X = np.random.default_rng(0).standard_normal((4, 16, 16, 3)).astype(np.float32)
Y = np.array([0, 1, 2, 3])


def _init(name: str, **kw):
  model = models.get_model(name, num_classes=10, **kw)
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), X[:1])


def _drop_every_third(params) -> dict[str, jax.Array]:
  return {p: jnp.arange(layer.num_filters) % 3 == 1
          for p, layer in layers.filter_layers(params).items()}


def _bits(x) -> np.ndarray:
  return np.asarray(x).view(np.uint32)


@pytest.mark.parametrize("name, conv, bn, has_bias", [
    ("resnet20", ("stage2_block1", "proj_conv"), ("stage2_block1", "proj_conv_bn"), False),
    ("convnet_c3_32", ("conv2",), ("conv2_bn",), True),
    ("vgg8", ("stage3_conv1",), ("stage3_conv1_bn",), True),
])
def test_filter_masks_pair_conv_and_bn(name, conv, bn, has_bias):
  model = models.get_model(name, num_classes=10)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), X[:1])["params"]
  path = "/".join(conv)
  dropped = {path: jnp.arange(layers.filter_layers(params)[path].num_filters) < 2}
  m = jax.jit(masks.filter_masks)(params, dropped)
  flat = {k: v for k, v in jax.tree_util.tree_flatten_with_path(m)[0]}
  node = functools.reduce(lambda t, k: t[k], conv, m)
  bn_node = functools.reduce(lambda t, k: t[k], bn, m)
  expected = np.r_[0.0, 0.0, np.ones(node["kernel"].shape[0] - 2)]
  leaves = [node["kernel"], bn_node["scale"], bn_node["bias"]]
  leaves += [node["bias"]] if has_bias else []
  for leaf in leaves:
    np.testing.assert_array_equal(leaf, expected)
  assert ("bias" in node) == has_bias
  n_layers = len(layers.filter_layers(params))
  assert len(flat) == n_layers * (4 if has_bias else 3)   # every conv, all ones elsewhere


def test_conv_without_bn_masks_kernel_only():
  model = models.get_model("preact_resnet18", num_classes=10)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), X[:1])["params"]
  m = masks.filter_masks(params, {})
  assert set(m["stage1_block1"]["conv2"]) == {"kernel"}
  assert "conv2_bn" not in m["stage1_block1"] and "conv1_bn" in m["stage1_block1"]


@pytest.mark.parametrize("name, train", [("convnet_c3_32", True), ("convnet_c3_32", False),
                                         pytest.param("resnet20", True, marks=pytest.mark.slow)])
def test_dropped_filters_output_exactly_zero(name, train):
  model, variables = _init(name)
  dropped = _drop_every_third(variables["params"])
  m = masks.filter_masks(variables["params"], dropped)
  masked = {**variables, "params": masks.apply_masks(variables["params"], m)}
  r = jax.jit(functools.partial(layers.filter_responses, model, train=train))(masked, X)
  for p, d in dropped.items():
    assert np.all(np.asarray(r[p])[..., np.asarray(d)] == 0), p
    assert np.any(np.asarray(r[p])[..., ~np.asarray(d)] != 0), p


def test_masked_apply_equals_apply_of_masked_params():
  model, variables = _init("convnet_c3_32")
  m = masks.filter_masks(variables["params"], _drop_every_third(variables["params"]))
  logits, _ = jax.jit(masks.masked_apply(model.apply))(variables, m, X)
  ref, _ = model.apply({**variables, "params": masks.apply_masks(variables["params"], m)}, X)
  np.testing.assert_array_equal(logits, ref)


def _run(tx, model, variables, m, steps=5):
  """`steps` jitted SGD steps of cross-entropy through the masked forward pass."""
  params, stats = variables["params"], variables["batch_stats"]
  state = masks.set_masks(tx.init(params), m)
  apply = masks.masked_apply(model.apply)

  @jax.jit
  def step(params, stats, state):
    def loss(p):
      (logits, _), upd = apply({"params": p, "batch_stats": stats}, m, X, train=True,
                               mutable=["batch_stats"])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), Y]), upd
    (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), upd["batch_stats"], state

  for _ in range(steps):
    params, stats, state = step(params, stats, state)
  return params, stats, state


@pytest.mark.parametrize("base", [
    optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9)),
    optax.adam(1e-2),
], ids=["sgd_momentum_wd", "adam"])
def test_masked_parameters_bit_identical_after_5_steps(base):
  model, variables = _init("convnet", depth=2, width=8)
  params = variables["params"]
  dropped = _drop_every_third(params)
  m = masks.filter_masks(params, dropped)
  # Non-zero BN scale/bias so that "unchanged" is not "stayed at 0 / 1".
  params = jax.tree.map(lambda p: p + 0.1, params)
  new, stats, _ = _run(optax.chain(base, masks.mask_updates()), model,
                       {**variables, "params": params}, m)
  for key, mask in jax.tree_util.tree_flatten_with_path(m)[0]:
    old_leaf = functools.reduce(lambda t, k: t[k.key], key, params)
    new_leaf = functools.reduce(lambda t, k: t[k.key], key, new)
    d = np.asarray(mask) == 0
    np.testing.assert_array_equal(_bits(new_leaf)[..., d], _bits(old_leaf)[..., d])
    if key[-1].key != "bias" or key[-2].key.endswith("_bn"):
      # (A conv bias followed by BatchNorm has zero gradient in train mode.)
      moved = (np.asarray(new_leaf) != np.asarray(old_leaf)).reshape(-1, d.size).any(0)
      assert np.all(moved[~d]), key   # every kept filter changed
  # And the network's dropped filters still output exactly 0.
  r = layers.filter_responses(model, {"params": masks.apply_masks(new, m), "batch_stats": stats}, X)
  assert all(np.all(np.asarray(r[p])[..., np.asarray(d)] == 0) for p, d in dropped.items())


def test_without_mask_updates_weight_decay_moves_dropped_filters():
  """Why the updates need masking: forward masks alone zero the gradient, not the decay."""
  model, variables = _init("convnet", depth=2, width=8)
  m = masks.filter_masks(variables["params"], _drop_every_third(variables["params"]))
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9),
                   masks.mask_updates())
  plain = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
  state = plain.init(variables["params"])
  g = jax.tree.map(jnp.zeros_like, variables["params"])
  updates, _ = plain.update(g, state, variables["params"])
  moved = optax.apply_updates(variables["params"], updates)
  d = np.asarray(_drop_every_third(variables["params"])["conv1"])
  assert np.any(np.asarray(moved["conv1"]["kernel"])[..., d] !=
                np.asarray(variables["params"]["conv1"]["kernel"])[..., d])
  state = masks.set_masks(tx.init(variables["params"]), m)
  updates, _ = tx.update(g, state, variables["params"])
  kept = optax.apply_updates(variables["params"], updates)
  np.testing.assert_array_equal(_bits(kept["conv1"]["kernel"])[..., d],
                                _bits(variables["params"]["conv1"]["kernel"])[..., d])


def test_masked_update_keeps_signed_zeros():
  params = {"c": {"kernel": jnp.array([0.0, -0.0, 1.0, -0.0]).reshape(1, 1, 1, 4)}}
  tx = masks.mask_updates()
  m = masks.filter_masks(params, {"c": jnp.array([1, 1, 0, 1], bool)})
  state = masks.set_masks(tx.init(params), m)
  updates, _ = tx.update({"c": {"kernel": jnp.array([0.5, 0.5, 0.5, 0.0]).reshape(1, 1, 1, 4)}},
                         state)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(_bits(new["c"]["kernel"])[..., [0, 1, 3]],
                                _bits(params["c"]["kernel"])[..., [0, 1, 3]])


def _reset_check(tx, params) -> int:
  """Resets after 2 steps; returns how many leaves changed, checking each changed one."""
  g = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  state = tx.init(params)
  for _ in range(2):
    _, state = tx.update(g, state, params)
  m = masks.filter_masks(params, _drop_every_third(params))
  new = jax.jit(masks.reset_optimizer_moments)(state, m)
  flat_m = {tuple(k.key for k in key): v for key, v in jax.tree_util.tree_flatten_with_path(m)[0]}
  changed = 0
  for (path, old), leaf in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                               jax.tree.leaves(new)):
    if np.array_equal(_bits(leaf), _bits(old)):
      continue
    changed += 1   # a moment of a masked parameter: dropped entries 0, the rest bit-identical
    names = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))[-2:]
    d = np.asarray(flat_m[names]) == 0     # convnet params: {layer: {leaf}}
    assert np.all(np.asarray(leaf)[..., d] == 0) and np.all(np.asarray(old)[..., d] != 0)
    np.testing.assert_array_equal(_bits(leaf)[..., ~d], _bits(old)[..., ~d])
  return changed


def test_reset_optimizer_moments_sgd_adam_multi_transform():
  _, variables = _init("convnet", depth=2, width=8)
  params = variables["params"]
  n = len(jax.tree.leaves(masks.filter_masks(params, {})))   # 8: 2 x (kernel, bias, scale, bias)
  sgd = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9),
                    masks.mask_updates())
  assert _reset_check(sgd, params) == n                       # trace
  assert _reset_check(optax.chain(optax.adam(1e-3), masks.mask_updates()), params) == 2 * n
  labels = jax.tree.map(lambda _: "default", params)
  labels["conv1"]["bias"] = "other"
  multi = optax.chain(optax.multi_transform(
      {"default": optax.sgd(0.1, momentum=0.9), "other": optax.adam(1e-3)}, labels),
      masks.mask_updates())
  assert _reset_check(multi, params) == n - 1 + 2             # trace of n - 1, mu + nu of 1


def test_set_masks_errors():
  params = {"c": {"kernel": jnp.ones((1, 1, 1, 2))}}
  with pytest.raises(ValueError, match="no mask_updates"):
    masks.set_masks(optax.sgd(0.1).init(params), masks.filter_masks(params, {}))
  with pytest.raises(ValueError, match="structure"):
    masks.set_masks(masks.mask_updates().init(params), {})


@pytest.mark.parametrize("call, match", [
    (lambda p: masks.filter_masks(p, {"nope": jnp.zeros(2, bool)}), "unknown conv"),
    (lambda p: masks.filter_masks(p, {"c": jnp.zeros(3, bool)}), "shape"),
    (lambda p: masks.apply_masks(p, {"d": {"kernel": jnp.ones(2)}}), "no matching"),
    (lambda p: masks.filter_masks({"head": {"kernel": jnp.ones((2, 2))}}, {}), "no conv"),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call({"c": {"kernel": jnp.ones((1, 1, 1, 2))}})
