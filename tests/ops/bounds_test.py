"""Tests of jaxcomp.ops.bounds (gradient-passing lower bound, TFC bound_ops_test style)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.ops.bounds import lower_bound

X = jnp.asarray([-1.0, 0.0, 0.5, 1.0, 2.0])


def test_forward_is_max():
  y = jax.jit(lower_bound)(X, 0.5)
  np.testing.assert_array_equal(y, [0.5, 0.5, 0.5, 1.0, 2.0])  # max(x, 0.5), exact


def test_gradient_blocked_when_pushing_further_below():
  # d/dx sum(lb(x)) = +1 everywhere: descent would lower x, so it is blocked below the bound.
  g = jax.jit(jax.grad(lambda x: lower_bound(x, 0.5).sum()))(X)
  np.testing.assert_array_equal(g, [0.0, 0.0, 1.0, 1.0, 1.0])


def test_gradient_passes_when_pushing_back_into_range():
  # d/dx -sum(lb(x)) = -1: descent raises x, so the gradient passes even below the bound.
  g = jax.jit(jax.grad(lambda x: -lower_bound(x, 0.5).sum()))(X)
  np.testing.assert_array_equal(g, [-1.0] * 5)


def test_rejects_integers():
  with pytest.raises(ValueError, match="float"):
    lower_bound(jnp.arange(3), 1)
