"""Tests of jaxcomp.layers.gdn and parametrizers (closed forms as TFC's gdn_test.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.layers import parametrizers
from jaxcomp.layers.gdn import GDN, gdn

X = jax.random.normal(jax.random.key(0), (2, 5, 7, 4)) * 3.0


def _apply(module, x):
  variables = jax.jit(module.init)(jax.random.key(1), x)
  return jax.jit(module.apply)(variables, x), variables


@pytest.mark.parametrize("inverse,simplified,expected", [
    # Initial parameters beta = 1, gamma = 0.1 I give these per-element closed forms.
    (False, False, lambda x: x / jnp.sqrt(1 + 0.1 * x ** 2)),
    (True, False, lambda x: x * jnp.sqrt(1 + 0.1 * x ** 2)),
    (False, True, lambda x: x / (1 + 0.1 * jnp.abs(x))),   # TFC gdn_test expectation
    (True, True, lambda x: x * (1 + 0.1 * jnp.abs(x))),
])
def test_closed_form_at_init(inverse, simplified, expected):
  y, _ = _apply(GDN(inverse=inverse, simplified=simplified), X)
  # float32 with a sqrt and a ~1e-7-relative reparameterisation round trip: 1e-5 relative.
  np.testing.assert_allclose(y, expected(X), rtol=1e-5, atol=1e-6)


def test_gdn_igdn_inverse_at_identity_parameters():
  # beta = 1, gamma = 0: both are the identity, so IGDN(GDN(x)) = x.
  beta, gamma = jnp.ones(4), jnp.zeros((4, 4))
  f = jax.jit(lambda x: gdn(gdn(x, beta, gamma), beta, gamma, inverse=True))
  np.testing.assert_allclose(f(X), X, rtol=1e-6)


def test_cross_channel_form():
  # Explicit sum over j of gamma_ji x_j^2 against the einsum (definition, Eq. 6 of Balle 2016).
  key1, key2 = jax.random.split(jax.random.key(2))
  beta = jax.random.uniform(key1, (4,), minval=0.5, maxval=2.0)
  gamma = jax.random.uniform(key2, (4, 4), maxval=0.3)
  x = np.asarray(X[0, 0, 0])
  expected = [x[i] / np.sqrt(beta[i] + sum(gamma[j, i] * x[j] ** 2 for j in range(4)))
              for i in range(4)]
  np.testing.assert_allclose(jax.jit(gdn)(X[0, 0, 0], beta, gamma), expected, rtol=1e-5)


def test_reparameterisation_round_trip_and_bounds():
  v = jnp.asarray([0.0, 1e-6, 0.1, 1.0, 5.0])
  p = parametrizers.nonnegative_init(v)
  # sqrt then square in float32: relative error ~1e-7, absolute ~pedestal (2^-36).
  np.testing.assert_allclose(parametrizers.nonnegative_value(p), v, rtol=1e-6, atol=1e-9)
  low = parametrizers.nonnegative_value(jnp.asarray([-3.0, 0.0]), minimum=1e-6)
  np.testing.assert_allclose(low, 1e-6, rtol=1e-4)  # clamped to the minimum


def test_beta_below_bound_still_gets_gradient_back_up():
  # A beta parameter stuck below its bound must still get a gradient that raises it when
  # the loss asks for a larger beta: loss = sum y^2 decreases as beta grows.
  module = GDN()
  variables = jax.jit(module.init)(jax.random.key(0), X)
  params = dict(variables["params"])
  params["beta"] = jnp.full_like(params["beta"], -1.0)  # far below sqrt(beta_min + ped)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, X) ** 2)))(params)
  assert np.all(np.asarray(grads["beta"]) < 0)  # descent raises beta's parameter


def test_channel_mismatch_raises():
  with pytest.raises(ValueError, match="channels"):
    gdn(X, jnp.ones(3), jnp.zeros((3, 3)))
