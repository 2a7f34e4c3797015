"""Gaussian conditional entropy model (Ballé et al. 2018, Sec. 3, Eq. 9-11).

`p(y | mu, sigma) = Phi((1/2 - |y - mu|) / sigma) - Phi((-1/2 - |y - mu|) / sigma)`,
the Gaussian convolved with a unit box, evaluated on the lower tail (`|.|`)
to avoid cancellation; `Phi(x) = erfc(-x / sqrt 2) / 2`. Sigma is bounded below
by 0.11 and the likelihood by 1e-9, both with gradient-passing bounds
(CompressAI `GaussianConditional`). No parameters of its own: the scales come
from the hyper-synthesis transform.
"""

from __future__ import annotations

import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.ops.bounds import lower_bound

SCALE_BOUND = 0.11


def standardized_cumulative(x: jax.Array) -> jax.Array:
  """Standard normal CDF `Phi(x) = erfc(-x / sqrt 2) / 2` (accurate in the lower tail)."""
  return 0.5 * jax.lax.erfc(-x * (2.0 ** -0.5))


def likelihood(y: jax.Array, scales: jax.Array, means: jax.Array | float = 0.0, *,
               scale_bound: float = SCALE_BOUND, likelihood_bound: float = 1e-9) -> jax.Array:
  """Probability of the unit bin around `y` under `N(means, scales**2)` (Eq. 11).

  Args:
    y: float, any shape (quantized or noisy latents).
    scales: broadcastable to `y`, > 0 (bounded below by `scale_bound`).
    means: broadcastable to `y`.
    scale_bound: lower bound of the scales (0.11, CompressAI / TFC).
    likelihood_bound: lower bound of the result (0 disables it).

  Returns:
    Same shape as `y`, in `[likelihood_bound, 1]`.
  """
  scales = lower_bound(jnp.asarray(scales, y.dtype), scale_bound)
  values = jnp.abs(y - means)
  p = (standardized_cumulative((0.5 - values) / scales)
       - standardized_cumulative((-0.5 - values) / scales))
  if likelihood_bound > 0:
    p = lower_bound(p, likelihood_bound)
  return p


def scale_table(*, minimum: float = SCALE_BOUND, maximum: float = 256.0,
                levels: int = 64) -> np.ndarray:
  """`exp(linspace(log minimum, log maximum, levels))` (CompressAI's coding scale table)."""
  return np.exp(np.linspace(math.log(minimum), math.log(maximum), levels))


def scale_indexes(scales: jax.Array, table: np.ndarray) -> jax.Array:
  """Index of the table scale nearest to each scale in log domain.

  The boundary between entries i and i+1 is their geometric mean; scales below
  the first entry (the 0.11 bound) map to 0, above the last to S - 1. Nearest
  rather than next-larger (CompressAI) halves the worst-case mismatch, so the
  coded rate tracks the likelihood estimate more closely.

  Args:
    scales: float, any shape.
    table: `(S,)` increasing scales.

  Returns:
    int32 indexes in `[0, S)`, shape of `scales`.
  """
  table = np.asarray(table, np.float64)
  bounds = jnp.asarray(np.sqrt(table[:-1] * table[1:]), scales.dtype)
  return jnp.sum(scales[..., None] > bounds, axis=-1).astype(jnp.int32)


def pmf_table(table: np.ndarray, *, tail_mass: float = 1e-9
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Probability tables of the integer symbols `y - mu` for each table scale.

  Scale s covers `-n .. n`, `n = ceil(s * Phi^{-1}(1 - tail_mass/2))`.

  Returns:
    pmf `(S, L)` float64 (row i valid up to `lengths[i]`), tail `(S,)` (mass
    outside the table), offsets `(S,)` int32 (`-n`), lengths `(S,)` int32.
  """
  multiplier = -statistics.NormalDist().inv_cdf(tail_mass / 2)
  half = np.ceil(np.asarray(table) * multiplier).astype(np.int32)
  lengths = 2 * half + 1
  samples = np.arange(lengths.max())[None, :] - half[:, None]
  pmf = np.asarray(likelihood(jnp.asarray(samples, jnp.float32),
                              jnp.asarray(table, jnp.float32)[:, None],
                              likelihood_bound=0.0), np.float64)
  tail = np.asarray(2.0 * standardized_cumulative(
      jnp.asarray(-(half + 0.5) / table, jnp.float32)), np.float64)
  return pmf, tail, -half, lengths
