"""Rounding and its differentiable stand-ins.

`round_st` is the straight-through estimator (forward: round, backward: identity);
`add_uniform_noise` is the additive-noise relaxation of quantization used to train
learned codecs (Ballé et al. 2017, Sec. 2.3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def round_st(x: jax.Array) -> jax.Array:
  """Rounds to the nearest integer; the gradient passes through unchanged.

  Forward `round(x)`, backward `d/dx = 1` (Bengio et al. 2013).
  """
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def add_uniform_noise(x: jax.Array, key: jax.Array) -> jax.Array:
  """Returns `x + u`, `u ~ U(-0.5, 0.5)` i.i.d., the training proxy for `round(x)`."""
  return x + jax.random.uniform(key, x.shape, x.dtype, -0.5, 0.5)
