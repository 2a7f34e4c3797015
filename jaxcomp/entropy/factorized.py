"""Factorized density ("entropy bottleneck"), Ballé et al. 2018, Appendix 6.1.

Per channel a monotone cumulative `c = f_K o ... o f_1` of scalars,
`f_k(x) = g_k(H_k x + b_k)` with `g_k(x) = x + a_k * tanh(x)` (no `g` after the
last layer, which is read as logits of the CDF: `c = sigmoid(logits)`).
Monotonicity: `H_k = softplus(H_k')` > 0 and `a_k = tanh(a_k')` > -1 (Eq. 6.3-6.5).
The likelihood of the unit bin around `y` is `c(y + 1/2) - c(y - 1/2)`, computed
on the side of the sigmoid where it is small (the sign trick of TFC/CompressAI).

Medians and tails: each channel has "quantiles" `(lower tail, median, upper tail)`
fitted by `aux_loss` (CompressAI's auxiliary loss) so that the CDF logits there
equal `-log(2/tail_mass - 1)`, 0 and `+log(2/tail_mass - 1)`; only the quantiles
learn from it (the density parameters are held constant in it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.entropy.quantization import quantize_latents
from jaxcomp.ops.bounds import lower_bound


class Density(NamedTuple):
  """Unconstrained parameters of the per-channel CDF network.

  matrices[k]: `(C, d_{k+1}, d_k)`; biases[k]: `(C, d_{k+1}, 1)`; factors[k]:
  `(C, d_{k+1}, 1)` for every layer but the last; `d = (1, *filters, 1)`.
  """
  matrices: tuple[jax.Array, ...]
  biases: tuple[jax.Array, ...]
  factors: tuple[jax.Array, ...]


def logits_cumulative(x: jax.Array, density: Density) -> jax.Array:
  """CDF logits `c^{-1}` of each channel's density (Eq. 6.2-6.5 of Ballé 2018).

  Args:
    x: `(C, 1, n)` float, n points per channel.
    density: the channel-wise parameters.

  Returns:
    `(C, 1, n)`, monotone increasing in x; `sigmoid` of it is the CDF.
  """
  for k, (h, b) in enumerate(zip(density.matrices, density.biases)):
    x = jnp.einsum("cij,cjn->cin", jax.nn.softplus(h), x,
                   precision=jax.lax.Precision.HIGHEST) + b
    if k < len(density.factors):
      x = x + jnp.tanh(density.factors[k]) * jnp.tanh(x)
  return x


def _channels_first(y: jax.Array) -> jax.Array:
  return y.reshape(-1, y.shape[-1]).T[:, None, :]


def _bin_probability(lower: jax.Array, upper: jax.Array) -> jax.Array:
  """`sigmoid(upper) - sigmoid(lower)`, evaluated on the tail side (no cancellation)."""
  sign = jax.lax.stop_gradient(jnp.where(lower + upper > 0, -1.0, 1.0)).astype(lower.dtype)
  return jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))


def likelihood(y: jax.Array, density: Density, *, likelihood_bound: float = 1e-9) -> jax.Array:
  """`P(bin around y) = c(y + 1/2) - c(y - 1/2)`, lower-bounded (Ballé 2018, Eq. 6).

  Args:
    y: `(..., C)` float, channels last (quantized or noisy latents).
    density: parameters for the C channels.
    likelihood_bound: lower bound of the result (gradient-passing, as CompressAI).

  Returns:
    `(..., C)` probabilities in `[likelihood_bound, 1]`.
  """
  v = _channels_first(y)
  p = _bin_probability(logits_cumulative(v - 0.5, density),
                       logits_cumulative(v + 0.5, density))
  if likelihood_bound > 0:
    p = lower_bound(p, likelihood_bound)
  return p[:, 0, :].T.reshape(y.shape)


def medians(quantiles: jax.Array) -> jax.Array:
  """Per-channel medians `(C,)` from the `(C, 1, 3)` quantiles parameter."""
  return quantiles[:, 0, 1]


def aux_loss(quantiles: jax.Array, density: Density, *, tail_mass: float = 1e-9) -> jax.Array:
  """`sum |logits(quantiles) - target|`, target `(-t, 0, t)`, `t = log(2/tail_mass - 1)`.

  Gradients flow into `quantiles` only (CompressAI `EntropyBottleneck.loss`).
  """
  t = math.log(2.0 / tail_mass - 1.0)
  target = jnp.asarray([-t, 0.0, t], quantiles.dtype)
  logits = logits_cumulative(quantiles, jax.tree.map(jax.lax.stop_gradient, density))
  return jnp.sum(jnp.abs(logits - target))


def fit_quantiles(density: Density, *, tail_mass: float = 1e-9, iterations: int = 64
                  ) -> jax.Array:
  """Quantiles that solve the auxiliary loss exactly, by bisection (host side).

  The CDF logits are increasing in x, so for each channel and target in
  `(-t, 0, t)`, `t = log(2/tail_mass - 1)`, bisection on a bracket (doubled until
  it contains the target) finds x with `logits(x) = target` (the procedure
  CompressAI PR #231 uses instead of the auxiliary loss). Use after short
  trainings, where the aux loss has not converged, before building coding tables.

  Returns:
    `(C, 1, 3)` float32 quantiles (lower tail, median, upper tail).
  """
  t = math.log(2.0 / tail_mass - 1.0)
  channels = density.matrices[0].shape[0]
  target = jnp.broadcast_to(jnp.asarray([-t, 0.0, t], jnp.float32), (channels, 1, 3))
  logits = jax.jit(logits_cumulative)
  radius = 1.0
  while radius < 2.0 ** 30 and not (bool(jnp.all(logits(jnp.full_like(target, -radius), density)
                                                  < target))
                                    and bool(jnp.all(logits(jnp.full_like(target, radius), density)
                                                     > target))):
    radius *= 2.0

  @jax.jit
  def bisect(lo, hi):
    def body(_, bounds):
      lo, hi = bounds
      mid = 0.5 * (lo + hi)
      below = logits_cumulative(mid, density) < target
      return jnp.where(below, mid, lo), jnp.where(below, hi, mid)
    lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    return 0.5 * (lo + hi)

  return bisect(jnp.full_like(target, -radius), jnp.full_like(target, radius))


def pmf_table(density: Density, quantiles: jax.Array, *, max_half_length: int = 2048
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Per-channel probability tables over the integers around the medians (host side).

  Channel c covers the symbols `k = -lo_c .. hi_c` (values `median_c + k`), with
  `lo = ceil(median - lower quantile)`, `hi = ceil(upper quantile - median)`,
  each clipped to `[0, max_half_length]`.

  Returns:
    pmf `(C, L)` float64 (row c valid up to `lengths[c]`), tail `(C,)` float64
    (mass outside the table: the escape symbol), offsets `(C,)` int32 (`-lo`,
    the symbol of entry 0), lengths `(C,)` int32.
  """
  q = np.asarray(quantiles, np.float64)[:, 0, :]
  med = q[:, 1]
  lo = np.clip(np.ceil(med - q[:, 0]), 0, max_half_length).astype(np.int32)
  hi = np.clip(np.ceil(q[:, 2] - med), 0, max_half_length).astype(np.int32)
  lengths = lo + hi + 1
  steps = np.arange(lengths.max())[None, :] - lo[:, None]
  samples = jnp.asarray(med[:, None] + steps, jnp.float32)[:, None, :]
  lower, upper = _jit_bounds(samples, density)
  pmf = np.asarray(_bin_probability(lower, upper), np.float64)[:, 0, :]
  lower, upper = np.asarray(lower, np.float64)[:, 0, :], np.asarray(upper, np.float64)[:, 0, :]
  rows = np.arange(len(lengths))
  sigmoid = lambda v: 0.5 * (1.0 + np.tanh(0.5 * v))  # noqa: E731  (float64, overflow-free)
  tail = sigmoid(lower[:, 0]) + sigmoid(-upper[rows, lengths - 1])
  return pmf, tail, -lo, lengths


@jax.jit
def _jit_bounds(samples: jax.Array, density: Density) -> tuple[jax.Array, jax.Array]:
  return logits_cumulative(samples - 0.5, density), logits_cumulative(samples + 0.5, density)


class EntropyBottleneck(nn.Module):
  """Flax owner of the factorized density and its quantiles.

  Parameters: `matrix_k`, `bias_k`, `factor_k` (CompressAI initialisation:
  matrices `log(expm1(1 / s / d_{k+1}))`, `s = init_scale**(1/(K+1))`, biases
  U(-1/2, 1/2), factors 0) and `quantiles` `(C, 1, 3)` = `(-init_scale, 0, init_scale)`.
  """
  channels: int
  filters: tuple[int, ...] = (3, 3, 3)
  init_scale: float = 10.0
  tail_mass: float = 1e-9
  likelihood_bound: float = 1e-9

  def setup(self):
    dims = (1, *self.filters, 1)
    scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
    c = self.channels
    matrices, biases, factors = [], [], []
    for k in range(len(dims) - 1):
      value = math.log(math.expm1(1.0 / scale / dims[k + 1]))
      matrices.append(self.param(f"matrix_{k}", nn.initializers.constant(value),
                                 (c, dims[k + 1], dims[k])))
      biases.append(self.param(f"bias_{k}", lambda key, s: jax.random.uniform(
          key, s, minval=-0.5, maxval=0.5), (c, dims[k + 1], 1)))
      if k < len(self.filters):
        factors.append(self.param(f"factor_{k}", nn.initializers.zeros, (c, dims[k + 1], 1)))
    self.density = Density(tuple(matrices), tuple(biases), tuple(factors))
    self.quantiles = self.param(
        "quantiles", lambda _, s: jnp.broadcast_to(
            jnp.asarray([-self.init_scale, 0.0, self.init_scale]), s), (c, 1, 3))

  def __call__(self, y: jax.Array, *, mode: str, key: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """Quantizes `y` `(..., C)` around the medians and returns `(y_hat, likelihood)`."""
    y_hat = quantize_latents(y, mode, medians(self.quantiles), key=key)
    return y_hat, likelihood(y_hat, self.density, likelihood_bound=self.likelihood_bound)

  def medians(self) -> jax.Array:
    return medians(self.quantiles)

  def aux_loss(self) -> jax.Array:
    return aux_loss(self.quantiles, self.density, tail_mass=self.tail_mass)


def density_from_params(params: dict) -> tuple[Density, jax.Array]:
  """`(Density, quantiles)` from an `EntropyBottleneck`'s parameter dict."""
  num = sum(1 for k in params if k.startswith("matrix_"))
  return Density(tuple(params[f"matrix_{k}"] for k in range(num)),
                 tuple(params[f"bias_{k}"] for k in range(num)),
                 tuple(params[f"factor_{k}"] for k in range(num - 1))), params["quantiles"]
