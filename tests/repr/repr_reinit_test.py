"""jaxcomp.repr.reinit: orthogonal re-initialisation (Algorithm 3, line 10) and BN resets.

Orthogonality is measured as |cos| between flattened filters (`kernel[..., f].ravel()`)
in float64 numpy; the "official" variant is checked against numpy's QR of the
kernel reshaped as iamaaditya/repr-ortho `ortho.py` reshapes it.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import models
from jaxcomp.repr import reinit

REINIT = jax.jit(reinit.orthogonal_reinit, static_argnames=("variant", "gain"))


def _rows(kernel) -> np.ndarray:
  k = np.asarray(kernel, np.float64)
  return np.stack([k[..., f].ravel() for f in range(k.shape[-1])])


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  return np.abs(a @ b.T)


def _kernel(shape, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_new_filters_orthogonal_to_kept_and_each_other():
  kernel = _kernel((3, 3, 4, 16))                  # d = 36 >= 16 filters
  dropped = np.zeros(16, bool)
  dropped[[1, 4, 5, 9, 15]] = True
  new = REINIT(kernel, dropped, jax.random.PRNGKey(0))
  w, w0 = _rows(new), _rows(kernel)
  assert np.max(_cos(w[dropped], w0[~dropped])) < 1e-5
  c = _cos(w[dropped], w[dropped])
  assert np.max(c - np.eye(5)) < 1e-5
  # Scaled to the mean L2 norm of the kept filters.
  np.testing.assert_allclose(np.linalg.norm(w[dropped], axis=1),
                             np.linalg.norm(w0[~dropped], axis=1).mean(), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(new)[..., ~dropped], kernel[..., ~dropped])
  # Eager equals jit; the key decides the directions.
  eager = reinit.orthogonal_reinit(kernel, dropped, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(eager, new)
  other = REINIT(kernel, dropped, jax.random.PRNGKey(1))
  assert not np.allclose(other, new)


def test_fallback_small_null_space():
  # d = 8, 12 filters, 6 kept (rank 6): null space of dimension 2. Of the 6 new filters the
  # first 2 (in index order) are orthogonal to the kept ones; all 6 are mutually orthogonal.
  kernel = _kernel((2, 2, 2, 12), seed=1)
  dropped = np.arange(12) % 2 == 0
  w = _rows(REINIT(kernel, dropped, jax.random.PRNGKey(0)))
  kept = _rows(kernel)[~dropped]
  assert np.max(_cos(w[dropped][:2], kept)) < 1e-5
  assert np.max(_cos(w[dropped][2:], kept)) > 0.1           # no room left: not orthogonal
  assert np.max(_cos(w[dropped], w[dropped]) - np.eye(6)) < 1e-5


def test_fallback_more_new_filters_than_dimensions():
  # d = 4, 10 filters, 3 kept: 1 null-space direction, 3 in the row space, 3 random.
  kernel = _kernel((1, 1, 4, 10), seed=2)
  dropped = np.arange(10) >= 3
  new = REINIT(kernel, dropped, jax.random.PRNGKey(0))
  w = _rows(new)[dropped]
  assert np.all(np.isfinite(w))
  assert np.max(_cos(w[:1], _rows(kernel)[~dropped])) < 1e-5
  assert np.max(_cos(w[:4], w[:4]) - np.eye(4)) < 1e-5      # the first d mutually orthogonal
  np.testing.assert_allclose(np.linalg.norm(w, axis=1),
                             np.linalg.norm(_rows(kernel)[~dropped], axis=1).mean(), rtol=1e-5)


def test_every_filter_dropped_uses_all_norms():
  kernel = _kernel((3, 3, 2, 4), seed=3)
  w = _rows(REINIT(kernel, np.ones(4, bool), jax.random.PRNGKey(0)))
  assert np.max(_cos(w, w) - np.eye(4)) < 1e-5
  np.testing.assert_allclose(np.linalg.norm(w, axis=1),
                             np.linalg.norm(_rows(kernel), axis=1).mean(), rtol=1e-5)


def test_nothing_dropped_is_identity():
  kernel = _kernel((3, 3, 2, 4))
  np.testing.assert_array_equal(REINIT(kernel, np.zeros(4, bool), jax.random.PRNGKey(0)), kernel)


@pytest.mark.parametrize("shape", [(3, 3, 2, 5), (1, 1, 3, 5)])   # d >= C and d < C
def test_official_variant_is_qr_of_the_reshaped_layer(shape):
  kernel = _kernel(shape, seed=4)
  d, c = int(np.prod(shape[:-1])), shape[-1]
  a = kernel.astype(np.float64).reshape((c, d) if d < c else (d, c))
  q, r = np.linalg.qr(a)
  q = q * np.sign(np.diag(r))
  expected = (q.T if d < c else q).reshape(shape)
  dropped = np.array([True, False, True, False, False])
  new = REINIT(kernel, dropped, jax.random.PRNGKey(0), variant="official")
  np.testing.assert_allclose(np.asarray(new)[..., dropped], expected[..., dropped], atol=1e-5)
  np.testing.assert_array_equal(np.asarray(new)[..., ~dropped], kernel[..., ~dropped])


@pytest.fixture(scope="module")
def convnet_variables():
  model = models.get_model("convnet", num_classes=10, depth=2, width=8)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  # Non-default BN state, so that resets are visible.
  return jax.tree.map(lambda x: x + 0.5, variables)


def test_reinit_filters_and_reset_bn(convnet_variables):
  params = convnet_variables["params"]
  dropped = {"conv2": jnp.arange(8) < 3}
  d = np.arange(8) < 3
  new = jax.jit(reinit.reinit_filters)(params, dropped, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(new["conv1"]["kernel"], params["conv1"]["kernel"])
  np.testing.assert_array_equal(np.asarray(new["conv2"]["bias"]), np.where(d, 0.0, 0.5))
  w = _rows(new["conv2"]["kernel"])
  assert np.max(_cos(w[d], w[~d])) < 1e-5

  out = jax.jit(reinit.reset_bn)({**convnet_variables, "params": new}, dropped)
  for coll, name, value in [("params", "scale", 1.0), ("params", "bias", 0.0),
                            ("batch_stats", "mean", 0.0), ("batch_stats", "var", 1.0)]:
    old = np.asarray(convnet_variables[coll]["conv2_bn"][name])
    got = np.asarray(out[coll]["conv2_bn"][name])
    np.testing.assert_array_equal(got[d], value)
    np.testing.assert_array_equal(got[~d], old[~d])
    np.testing.assert_array_equal(out[coll]["conv1_bn"][name],
                                  convnet_variables[coll]["conv1_bn"][name])
  np.testing.assert_array_equal(out["params"]["conv2"]["kernel"], new["conv2"]["kernel"])


def test_reset_bn_skips_convs_without_bn():
  model = models.get_model("preact_resnet18", num_classes=10)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), variables)
  out = reinit.reset_bn(variables, {"stage1_block1/conv2": jnp.ones(64, bool)})
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(variables)))


@pytest.mark.parametrize("call, match", [
    (lambda: reinit.orthogonal_reinit(np.ones((3, 3, 4)), np.ones(4, bool), jax.random.PRNGKey(0)),
     "conv kernel"),
    (lambda: reinit.orthogonal_reinit(np.ones((1, 1, 2, 4)), np.ones(3, bool),
                                      jax.random.PRNGKey(0)), "dropped has shape"),
    (lambda: reinit.orthogonal_reinit(np.ones((1, 1, 2, 4)), np.ones(4, bool),
                                      jax.random.PRNGKey(0), variant="svd"), "unknown variant"),
    (lambda: reinit.reinit_filters({"c": {"kernel": np.ones((1, 1, 2, 4))}},
                                   {"x": np.ones(4, bool)}, jax.random.PRNGKey(0)), "unknown conv"),
    (lambda: reinit.reset_bn({"params": {"c": {"kernel": np.ones((1, 1, 2, 4))}}},
                             {"x": np.ones(4, bool)}), "unknown conv"),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
