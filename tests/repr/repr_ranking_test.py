"""jaxcomp.repr.ranking and .layers: Eq. 5.1-5.2, the ablation metrics, global selection.

Expected values are hand computations written out in the tests (small
matrices), or numpy loops over filters (`kernel[..., f].ravel()`), the
formulas of the thesis (papers/001, Ch. 5) and of the author's code
(iamaaditya/repr-ortho `ranking.py`, REFERENCE_CODE.md Sec. E).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcomp import models
from jaxcomp.repr import layers, masks, ranking, selection

# Rows w0 = (1, 0), w1 = (1, 1), w2 = (0, -2) as a 1x1 conv on 2 channels, 3 filters.
ROWS = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]], np.float32)
KERNEL = ROWS.T.reshape(1, 1, 2, 3)
SELECT = jax.jit(selection.select_filters,
                 static_argnames=("fraction", "exclude", "max_fraction_per_layer"))


def _model_params(name: str, **kw) -> dict:
  model = models.get_model(name, num_classes=10, **kw)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]


def test_orthogonality_thesis_by_hand():
  # Normalised rows (1, 0), (1, 1)/sqrt2, (0, -1); |cos| off the diagonal:
  # (0,1) = (1,2) = 1/sqrt2, (0,2) = 0; the diagonal |1 - 1| = 0; J = 3.
  s = 1 / np.sqrt(2)
  expected = np.array([s, 2 * s, s]) / 3
  got = jax.jit(ranking.inter_filter_orthogonality)(KERNEL)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_orthogonality_official_by_hand():
  # ||W||_F^2 = 1 + 2 + 4 = 7; <w0,w1> = 1, <w0,w2> = 0, <w1,w2> = -2.
  # Signed off-diagonal row sums / 7, then |.| / J: |1|/21, |1 - 2|/21, |-2|/21.
  expected = np.array([1, 1, 2]) / 21
  got = jax.jit(functools.partial(ranking.inter_filter_orthogonality, variant="official"))(KERNEL)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_orthogonality_matches_numpy_loop_over_filters():
  kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)
  w = np.stack([kernel[..., f].ravel() for f in range(5)]).astype(np.float64)
  wn = w / np.linalg.norm(w, axis=1, keepdims=True)
  thesis = np.abs(wn @ wn.T - np.eye(5)).sum(1) / 5
  g = (w / np.linalg.norm(w)) @ (w / np.linalg.norm(w)).T
  official = np.abs((g - np.diag(np.diag(g))).mean(0))
  np.testing.assert_allclose(ranking.inter_filter_orthogonality(kernel), thesis, rtol=1e-5)
  np.testing.assert_allclose(ranking.inter_filter_orthogonality(kernel, variant="official"),
                             official, rtol=1e-5)


def test_orthogonality_extremes():
  eye = np.eye(4, dtype=np.float32).reshape(1, 1, 4, 4)      # orthogonal filters: O = 0
  np.testing.assert_allclose(ranking.inter_filter_orthogonality(eye), 0, atol=1e-7)
  same = np.ones((3, 3, 2, 4), np.float32)                    # identical: O = (J - 1) / J
  np.testing.assert_allclose(ranking.inter_filter_orthogonality(same), 3 / 4, rtol=1e-6)


def test_orthogonality_loss_value_and_gradient():
  params = {"a": {"kernel": KERNEL}, "b": {"kernel": np.ones((3, 3, 2, 4), np.float32)},
            "head": {"kernel": np.ones((5, 3), np.float32)}}
  # Sum of P entries: layer a 3 * (s + 2s + s)/3 = 4s; layer b 4 * 4 * 3/4 = 12.
  expected = 0.01 * (4 / np.sqrt(2) + 12)
  loss = jax.jit(ranking.orthogonality_loss)(params)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  w = {"c": {"kernel": np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)}}
  check_grads(jax.jit(ranking.orthogonality_loss), (w,), order=1, modes=["rev"], atol=1e-2,
              rtol=1e-2)
  zero = {"c": {"kernel": np.zeros((1, 1, 2, 2), np.float32)}}
  assert np.all(np.isfinite(jax.grad(ranking.orthogonality_loss)(zero)["c"]["kernel"]))


def test_weight_gradient_taylor_scores_by_hand():
  params = {"conv": {"kernel": KERNEL}}
  grads = {"conv": {"kernel": np.array([[0.5, -1.0, 2.0], [-3.0, 0.25, 1.0]],
                                       np.float32).reshape(1, 1, 2, 3)}}
  f = jax.jit(ranking.drop_scores, static_argnums=0)
  # ||w|| = 1, sqrt2, 2; sum |g| per filter = 3.5, 1.25, 3; sum |w g| = 0.5, 1.25, 2.
  np.testing.assert_allclose(f("weight_norm", params)["conv"], [-1, -np.sqrt(2), -2], rtol=1e-6)
  np.testing.assert_allclose(f("gradient", params, grads=grads)["conv"], [-3.5, -1.25, -3])
  np.testing.assert_allclose(f("taylor", params, grads=grads)["conv"], [-0.5, -1.25, -2])
  np.testing.assert_allclose(f("ortho", params)["conv"],
                             ranking.inter_filter_orthogonality(KERNEL))


def test_activation_scores_by_hand():
  params = {"conv": {"kernel": np.zeros((1, 1, 1, 2), np.float32)}}
  # Two examples, 1x2 maps, 2 channels. Channel 0: (3, -1), (0, 4); channel 1: (-1, -2), (1, 0).
  a = np.array([[[[3, -1], [-1, -2]]], [[[0, 1], [4, 0]]]], np.float32)
  responses = {"conv": a}
  f = jax.jit(ranking.drop_scores, static_argnums=0)
  # relu: ch0 (3, 0), (0, 4): norms 3, 4 -> mean 3.5; zeros 2/4.
  #       ch1 (0, 0), (1, 0): norms 0, 1 -> mean 0.5; zeros 3/4.
  np.testing.assert_allclose(f("activation_norm", params, responses=responses)["conv"],
                             [-3.5, -0.5])
  np.testing.assert_allclose(f("apoz", params, responses=responses)["conv"], [0.5, 0.75])


def test_random_scores_are_seeded():
  params = _model_params("convnet_c3_32")
  a = ranking.drop_scores("random", params, key=jax.random.PRNGKey(0))
  b = ranking.drop_scores("random", params, key=jax.random.PRNGKey(0))
  c = ranking.drop_scores("random", params, key=jax.random.PRNGKey(1))
  for p in a:
    np.testing.assert_array_equal(a[p], b[p])
    assert a[p].shape == (32,) and np.all((a[p] >= 0) & (a[p] < 1))
    assert not np.array_equal(a[p], c[p])


@pytest.mark.parametrize("name, first, count", [("resnet20", "stem_conv", 21),
                                                ("convnet_c3_32", "conv1", 3)])
def test_filter_layers_and_first_conv(name, first, count):
  params = _model_params(name)
  found = layers.filter_layers(params)
  assert len(found) == count and all(layer.bn is not None for layer in found.values())
  assert layers.first_conv(params, image_channels=3) == first
  if name == "resnet20":   # sorted tree order is not call order
    assert sorted(found)[0] == "stage1_block1/conv1"


def test_first_conv_ambiguous_raises():
  with pytest.raises(ValueError, match="input channels"):
    layers.first_conv(_model_params("resnet20"), image_channels=16)


def test_filter_responses_are_bn_outputs():
  # convnet_c3_32 at init: running mean 0, var 1, scale 1, bias 0, conv bias 0, so
  # conv1's response is conv(x) / sqrt(1 + 1e-5), conv(x) by a loop over the 3x3 taps.
  model = models.get_model("convnet", num_classes=10, depth=2, width=4)
  x = np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype(np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  r = jax.jit(functools.partial(layers.filter_responses, model))(variables, x)
  k = np.asarray(variables["params"]["conv1"]["kernel"])
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv = sum(xp[:, i:i + 6, j:j + 6, :] @ k[i, j] for i in range(3) for j in range(3))
  np.testing.assert_allclose(r["conv1"], conv / np.sqrt(1 + 1e-5), atol=1e-5)
  assert set(r) == {"conv1", "conv2"} and r["conv2"].shape == (2, 6, 6, 4)


def test_filter_responses_conv_without_bn():
  model = models.get_model("preact_resnet18", num_classes=10)
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  r = jax.eval_shape(functools.partial(layers.filter_responses, model), variables, x)
  assert r["stage1_block1/conv2"].shape == (1, 32, 32, 64)   # PreActBlock conv2: no BN
  assert len(r) == 20


def test_select_filters_by_hand():
  scores = {"b": jnp.array([4.0, 2.0]), "a": jnp.array([5.0, 1.0, 3.0])}
  # F = 5, n = floor(0.5 * 5) = 2: the two highest, a[0] = 5 and b[0] = 4.
  dropped, counts = SELECT(scores, fraction=0.5)
  np.testing.assert_array_equal(dropped["a"], [True, False, False])
  np.testing.assert_array_equal(dropped["b"], [True, False])
  assert int(counts["a"]) == 1 and int(counts["b"]) == 1
  # Cap 0.4: a may lose floor(1.2) = 1, b floor(0.8) = 0: only a[0] goes.
  dropped, counts = SELECT(scores, fraction=0.5, max_fraction_per_layer=0.4)
  np.testing.assert_array_equal(dropped["a"], [True, False, False])
  assert int(counts["b"]) == 0
  # Cap 0.5 on a: floor(1.5) = 1, b: 1; n = floor(0.8 * 5) = 4 but only 2 may go.
  dropped, _ = SELECT(scores, fraction=0.8, max_fraction_per_layer=0.5)
  assert int(sum(d.sum() for d in dropped.values())) == 2
  # Excluding a: F = 2, n = 1: b[0].
  dropped, counts = SELECT(scores, fraction=0.5, exclude=("a",))
  np.testing.assert_array_equal(dropped["a"], [False, False, False])
  np.testing.assert_array_equal(dropped["b"], [True, False])


def test_select_filters_ties_and_global_order():
  scores = {"x": jnp.array([1.0, 2.0, 2.0]), "y": jnp.array([2.0, 0.0, 0.0])}
  # n = floor(0.5 * 6) = 3, four filters score 2: "x" sorts first, lower index first.
  dropped, _ = SELECT(scores, fraction=0.5)
  np.testing.assert_array_equal(dropped["x"], [False, True, True])
  np.testing.assert_array_equal(dropped["y"], [True, False, False])


def test_select_on_resnet20_with_first_layer_excluded():
  params = _model_params("resnet20")
  kernels = layers.conv_kernels(params)
  scores = ranking.drop_scores("random", params, key=jax.random.PRNGKey(3))
  first = layers.first_conv(params, image_channels=3)
  dropped, counts = SELECT(scores, fraction=0.3, exclude=(first,), max_fraction_per_layer=0.5)
  total = sum(k.shape[-1] for p, k in kernels.items() if p != first)
  assert sum(int(c) for c in counts.values()) == int(0.3 * total)
  assert int(counts[first]) == 0
  assert all(int(counts[p]) <= int(0.5 * kernels[p].shape[-1]) for p in kernels)


def test_greedy_oracle_additive_loss_by_hand():
  # loss(dropped) = sum of the dropped filters' costs: greedy drops the cheapest first.
  costs = {"l1": jnp.array([3.0, 1.0]), "l2": jnp.array([2.0, 0.5, 4.0])}
  loss = lambda d: sum(jnp.sum(jnp.where(d[p], c, 0.0)) for p, c in costs.items())
  scores = ranking.greedy_oracle(loss, {"l1": 2, "l2": 3}, num_drop=2)
  # Order: l2[1] (0.5), l1[1] (1.0), then by cost l2[0], l1[0], l2[2]: scores 5, 4, 3, 2, 1.
  np.testing.assert_array_equal(scores["l1"], [2, 4])
  np.testing.assert_array_equal(scores["l2"], [3, 5, 1])


def test_greedy_oracle_first_step_is_brute_force_argmin():
  """The first greedy pick on a tiny C^2(4) equals the argmin over single-filter drops."""
  model = models.get_model("convnet", num_classes=3, depth=2, width=4)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((8, 6, 6, 3)).astype(np.float32)
  y = rng.integers(0, 3, 8)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  params = variables["params"]

  def loss(dropped):
    p = masks.apply_masks(params, masks.filter_masks(params, dropped))
    logits, _ = model.apply({**variables, "params": p}, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y])

  scores = ranking.greedy_oracle(loss, {"conv1": 4, "conv2": 4}, num_drop=1)
  single = {(p, f): float(loss({p: jnp.arange(4) == f})) for p in ("conv1", "conv2")
            for f in range(4)}
  best = min(single, key=single.get)
  assert float(scores[best[0]][best[1]]) == 8.0


@pytest.mark.parametrize("call, match", [
    (lambda: ranking.drop_scores("hessian", {"c": {"kernel": KERNEL}}), "unknown metric"),
    (lambda: ranking.drop_scores("ortho", {"head": {"kernel": np.ones((3, 2))}}), "no conv"),
    (lambda: ranking.drop_scores("gradient", {"c": {"kernel": KERNEL}}), "needs grads"),
    (lambda: ranking.drop_scores("apoz", {"c": {"kernel": KERNEL}}), "needs responses"),
    (lambda: ranking.drop_scores("random", {"c": {"kernel": KERNEL}}), "needs a key"),
    (lambda: ranking.inter_filter_orthogonality(np.ones((3, 3, 2))), "conv kernel"),
    (lambda: ranking.inter_filter_orthogonality(KERNEL, variant="x"), "unknown variant"),
    (lambda: selection.select_filters({"a": jnp.ones(3)}, 0.0), "fraction"),
    (lambda: selection.select_filters({"a": jnp.ones(3)}, 1.0), "fraction"),
    (lambda: selection.select_filters({"a": jnp.ones(3)}, 0.3, exclude=("b",)), "excluded"),
    (lambda: selection.select_filters({"a": jnp.ones(3)}, 0.3, max_fraction_per_layer=0),
     "max_fraction"),
    (lambda: selection.select_filters({}, 0.3), "no layers"),
    (lambda: ranking.greedy_oracle(lambda d: 0.0, {"a": 2}, 3), "num_drop"),
    (lambda: layers.filter_layers([1, 2]), "nested dicts"),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
