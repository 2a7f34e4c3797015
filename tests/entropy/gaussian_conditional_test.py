"""Tests of jaxcomp.entropy.gaussian_conditional against scipy's normal CDF."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxcomp.entropy import gaussian_conditional as gc


def test_matches_scipy_closed_form():
  y = jnp.asarray([-7.0, -2.0, 0.0, 1.0, 3.0, 12.0])
  s = jnp.asarray([0.5, 1.0, 2.0, 3.0, 0.7, 5.0])
  mu = jnp.asarray([0.2, -0.1, 0.0, 0.5, 0.0, 1.0])
  p = jax.jit(gc.likelihood)(y, s, mu)
  expected = (stats.norm.cdf(y + 0.5, mu, s) - stats.norm.cdf(y - 0.5, mu, s))  # Eq. 11
  np.testing.assert_allclose(p, np.maximum(expected, 1e-9), rtol=2e-5)  # float32 erfc


def test_sums_to_one_over_integers():
  s = jnp.asarray([0.05, 0.11, 1.0, 10.0, 100.0])
  y = jnp.arange(-2000.0, 2001.0)[:, None]
  total = jax.jit(gc.likelihood)(y, s, 0.3).sum(axis=0)
  # Telescoping sum; float32 rounding over up to ~1000 bins with mass.
  np.testing.assert_allclose(total, 1.0, atol=2e-4)


def test_scale_bound_forward_and_gradient():
  y = jnp.asarray([0.0, 1.0])
  p_small = gc.likelihood(y, 0.01)
  np.testing.assert_allclose(p_small, gc.likelihood(y, gc.SCALE_BOUND), rtol=1e-6)
  # At y = 1 the likelihood grows with the scale: the gradient (of -log p) must
  # pass through the bound to push the scale up.
  g = jax.jit(jax.grad(lambda s: -jnp.log(gc.likelihood(jnp.asarray(1.0), s))))(0.01)
  assert g < 0


def test_scale_indexes():
  table = gc.scale_table()
  assert table.shape == (64,) and np.isclose(table[0], 0.11) and np.isclose(table[-1], 256)
  s = jnp.asarray([0.01, 0.11, 0.5, 1.0, 255.9, 1e4, table[10] * 1.06, table[10] * 1.07])
  idx = np.asarray(jax.jit(lambda s: gc.scale_indexes(s, table))(s))
  # Nearest entry in log domain (brute force over the table).
  expected = np.argmin(np.abs(np.log(np.asarray(s))[:, None] - np.log(table)[None]), axis=1)
  np.testing.assert_array_equal(idx, expected)
  assert list(idx[-2:]) == [10, 11]    # the table's ratio is 1.131: boundary at x1.0635


def test_pmf_table_covers_the_mass():
  table = gc.scale_table()
  pmf, tail, offsets, lengths = gc.pmf_table(table)
  assert lengths[0] == 3 and offsets[0] == -1    # ceil(0.11 * 6.109) = 1
  total = np.asarray([pmf[i, :lengths[i]].sum() for i in range(64)]) + tail
  np.testing.assert_allclose(total, 1.0, atol=1e-4)  # float32 bins, up to ~3000 of them
