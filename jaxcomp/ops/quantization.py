"""Scalar quantizers with step sizes `q`: hard, straight-through, additive noise, soft.

Every quantizer maps coefficients `z` to reconstructions `z_hat` (dequantized values,
same shape), with `q` broadcastable to `z`:
- "hard":  `round(z / q) * q`; zero gradient almost everywhere.
- "ste":   forward as "hard"; `d z_hat / d z = 1` (straight-through, `round_st`).
- "noise": `z + u q`, `u ~ U(-.5, .5)` (Ballé et al. 2017, Sec. 2.3; `add_uniform_noise`).
- "soft":  the JPEG-DL soft quantizer `soft_quantize` (JPEG_DL.md, "Soft quantizer").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcomp.ops.rounding import add_uniform_noise, round_st
from jaxcomp.registry import Registry

# name -> quantizer(z, q, *, key, alpha, num_candidates, bits) -> z_hat.
QUANTIZERS: Registry = Registry("quantizer")


def check_positive(name: str, value: jax.Array | float) -> None:
  """ValueError unless every element of a concrete `value` is finite and > 0.

  Step sizes and hardness are checked where they enter the public functions;
  traced values (under `jit` / `grad`) cannot be, and pass unchecked.
  """
  if isinstance(value, jax.core.Tracer):
    return
  v = np.asarray(value)
  if v.size and not (np.all(np.isfinite(v)) and np.all(v > 0)):
    raise ValueError(f"{name} must be finite and > 0, got values in [{np.min(v)}, {np.max(v)}]")


def index_window(q: jax.Array, *, num_candidates: int, bits: int | None = 8,
                 bound: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The lowest and highest candidate index of the soft quantizer, `(lo, hi)`.

  Fixed b (the authors'): `[-2**(b-1) + 1, 2**(b-1) - 1]`, the same for every step.
  `bound` (`bits=None`, jaxcomp's "auto" window): `+-(ceil(bound / q) + L)`, from the
  largest |coefficient| the input can produce (`jpeg_transform.coefficient_bounds`),
  so no such coefficient is ever clipped, whatever the step.
  """
  if bound is None:
    if bits is None:
      raise ValueError("give bits or an index bound")
    half = 2.0 ** (bits - 1) - 1
    return jnp.asarray(-half, q.dtype), jnp.asarray(half, q.dtype)
  width = jnp.ceil(jnp.asarray(bound, q.dtype) / jax.lax.stop_gradient(q)) + num_candidates
  return -width, width


def soft_quantize(z: jax.Array, q: jax.Array, alpha: jax.Array | float, *,
                  num_candidates: int = 5, bits: int | None = 8,
                  bound: jax.Array | None = None) -> jax.Array:
  """JPEG-DL soft quantizer: a softmax-weighted mean of `L` reconstruction points.

  With `L = num_candidates`, `t = z / q` and the index window `[lo, hi]`
  (`index_window`: `[-2**(b-1) + 1, 2**(b-1) - 1]` for b bits):
  `i0 = clip(round(t) - floor(L/2), lo, hi - L + 1)`, candidates
  `i_k = i0 + k` (k = 0..L-1), reconstruction points `r_k = i_k q` (the integer index
  carries no gradient, `q` does), weights `w_k = softmax_k(-alpha (z - r_k)**2)` and
  `z_hat = sum_k w_k r_k` (JPEG_DL.md; the authors' `helper/JPEG_layer.py`). The
  gradient reaches `z` only through the weights.

  Limits: `alpha -> inf` gives hard rounding `round(t) q` (inside the index range);
  `alpha -> 0` gives the mean of the `L` candidates.

  Computed relative to the nearest candidate `b = i0 + c` (`c = clip(round(t - i0), 0,
  L-1)`, `d = t - b`): the weight of `b + j` is `exp(beta j (2d - j))`, `beta = alpha
  q**2`, an exponent <= 0, so nothing overflows however hard the quantizer. The gradients
  are closed forms of the weights' moments (a custom VJP):
  `dz_hat/dz = 2 beta Var(j)`,
  `dz_hat/dq = b + E[j] + 2 beta ((d - b) Var(j) - Cov(j, j**2))`,
  `dz_hat/dalpha = q**3 (2 d Var(j) - Cov(j, j**2))`, all under the weights `w`.

  Args:
    z: float coefficients, any shape.
    q: positive step sizes, broadcastable to `z` (e.g. an [8, 8] table against
      [..., 8, 8] blocks).
    alpha: positive hardness, a scalar or broadcastable to `z`.
    num_candidates: L >= 1 (JPEG-DL: 5).
    bits: b, the index range `[-2**(b-1) + 1, 2**(b-1) - 1]` (JPEG-DL: 8; ImageNet 11);
      None with `bound`.
    bound: instead of b, the largest |z| per element (broadcastable to `z`): the
      window `+-(ceil(bound / q) + L)` never clips such a coefficient.

  Returns:
    `z_hat`, same shape and dtype as `z`.
  """
  if num_candidates < 1 or (bound is None and (
      bits is None or 2 ** (bits - 1) - num_candidates < -2 ** (bits - 1) + 1)):
    raise ValueError(f"need num_candidates >= 1 and 2**bits > 2 * num_candidates - 2, "
                     f"got num_candidates={num_candidates}, bits={bits}")
  check_positive("step sizes q", q)
  check_positive("alpha", alpha)
  q = jnp.asarray(q, z.dtype)
  alpha = jnp.asarray(alpha, z.dtype)
  lo, hi = index_window(q, num_candidates=num_candidates, bits=bits, bound=bound)
  return soft_quantize_window(z, q, alpha, lo, hi, num_candidates)


def soft_quantize_window(z: jax.Array, q: jax.Array, alpha: jax.Array, lo: jax.Array,
                         hi: jax.Array, num_candidates: int) -> jax.Array:
  """`soft_quantize` with its index window given: `lo, hi` from `index_window`,
  broadcastable to `z` (no gradient reaches them); `z`, `q`, `alpha` as there, unchecked."""
  return _soft_quantize(num_candidates, z, q, alpha, lo, hi)


def _moments(num_candidates: int, z: jax.Array, q: jax.Array, alpha: jax.Array,
             lo: jax.Array, hi: jax.Array, with_grads: bool):
  """Forward value and (optionally) the three partial derivatives, elementwise.

  The weights of the L candidates are stacked on a new leading axis and their moments
  summed by one variadic `lax.reduce` over it: XLA:CPU then computes every moment in
  a single loop. Written elementwise (moments as separate sums), each output
  (value and derivatives) became its own fusion recomputing the weights: the whole
  JPEG-DL layer step at 16x224x224 was 1.06-1.10x slower (docs/performance.md).
  """
  L = num_candidates
  beta = alpha * q * q                                  # small (table) shape
  t = z / q
  i0 = jnp.clip(jnp.round(t) - L // 2, lo, hi - L + 1)
  c = jnp.clip(jnp.round(t - i0), 0, L - 1)             # nearest candidate, 0..L-1
  b = i0 + c
  d = t - b
  j = jnp.arange(L, dtype=z.dtype).reshape((L,) + (1,) * z.ndim) - c   # offsets from b
  # exp(beta j (2d - j)) = w_j / w_0; the exponent is <= 0 (|d| <= 1/2 unless the
  # window is clipped, and then d is on the side where no candidate is).
  w = jnp.exp(beta * j * (2.0 * d - j))
  add = lambda acc, v: tuple(a + e for a, e in zip(acc, v))
  zero = jnp.zeros((), z.dtype)
  if not with_grads:
    s, o1 = lax.reduce((w, j * w), (zero, zero), add, (0,))
    return q * (b + o1 / s)
  s, o1, o2, o3 = lax.reduce((w, j * w, j * j * w, j * j * j * w), (zero,) * 4, add, (0,))
  inv_s = 1.0 / s
  mean = o1 * inv_s
  y = q * (b + mean)
  e2 = o2 * inv_s
  var = e2 - mean * mean
  cov3 = o3 * inv_s - mean * e2                         # Cov(j, j**2)
  gz = 2.0 * beta * var
  gq = b + mean + 2.0 * beta * ((d - b) * var - cov3)
  ga = q * q * q * (2.0 * d * var - cov3)
  return y, gz, gq, ga


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums the broadcast axes of `x` away so that the result has `shape`.

  When the summed axes are adjacent (a table against [..., nh, nw, 8, 8] blocks) the
  sum is a product with a ones vector over the row-major [pre, N, post] view, not a
  reduction: XLA:CPU fuses a reduction (or a dot needing a transposed operand) with
  its whole elementwise producer, here the soft quantizer's moments, into a loop that
  runs 5-15x slower than an elementwise loop followed by a plain product.
  """
  full = (1,) * (x.ndim - len(shape)) + tuple(shape)
  reduced = [i for i, n in enumerate(full) if n == 1 and x.shape[i] != 1]
  if not reduced:
    return x.reshape(shape)
  if reduced != list(range(reduced[0], reduced[-1] + 1)):
    return x.sum(axis=tuple(reduced), keepdims=True).reshape(shape)
  pre = int(np.prod(x.shape[:reduced[0]], dtype=np.int64))
  n = int(np.prod(x.shape[reduced[0]:reduced[-1] + 1], dtype=np.int64))
  ones = jnp.ones((pre, 1, n), x.dtype)
  out = jax.lax.dot_general(ones, x.reshape(pre, n, -1), (((2,), (1,)), ((0,), (0,))),
                            precision=jax.lax.Precision.HIGHEST)
  return out.reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _soft_quantize(num_candidates, z, q, alpha, lo, hi):
  return _moments(num_candidates, z, q, alpha, lo, hi, with_grads=False)


def _soft_quantize_fwd(num_candidates, z, q, alpha, lo, hi):
  y, gz, gq, ga = _moments(num_candidates, z, q, alpha, lo, hi, with_grads=True)
  return y, (gz, gq, ga, q, alpha, lo, hi)


def _soft_quantize_bwd(num_candidates, residuals, ct):
  del num_candidates
  gz, gq, ga, q, alpha, lo, hi = residuals     # the window carries no gradient
  return (ct * gz, _sum_to_shape(ct * gq, q.shape), _sum_to_shape(ct * ga, alpha.shape),
          jnp.zeros_like(lo), jnp.zeros_like(hi))


_soft_quantize.defvjp(_soft_quantize_fwd, _soft_quantize_bwd)


QUANTIZERS.register("hard", lambda z, q, **_: jnp.round(z / q) * q)
QUANTIZERS.register("ste", lambda z, q, **_: round_st(z / q) * q)
QUANTIZERS.register("soft", lambda z, q, *, alpha, num_candidates, bits, **_: soft_quantize(
    z, q, alpha, num_candidates=num_candidates, bits=bits))


@QUANTIZERS.register("noise")
def _noise(z, q, *, key, **_):
  if key is None:
    raise ValueError("quantizer='noise' needs a PRNG key")
  return add_uniform_noise(z / q, key) * q


def quantize_dequantize(z: jax.Array, q: jax.Array, *, quantizer: str = "hard",
                        key: jax.Array | None = None, alpha: jax.Array | float = 5.0,
                        num_candidates: int = 5, bits: int = 8) -> jax.Array:
  """Quantize-dequantize `z` with steps `q` by the named quantizer (module docstring).

  Args:
    z: float coefficients.
    q: positive steps broadcastable to `z`.
    quantizer: a name in `QUANTIZERS` ("hard", "ste", "noise", "soft").
    key: PRNG key, required by "noise".
    alpha, num_candidates, bits: hyper-parameters of "soft" (see `soft_quantize`).

  Returns:
    Reconstructions `z_hat`, same shape and dtype as `z`.

  Raises:
    ValueError: an unknown quantizer, "noise" without a key, or (concrete
      values) steps or a "soft" alpha that are not finite and > 0.
  """
  try:
    fn = QUANTIZERS.get(quantizer)
  except KeyError as e:
    raise ValueError(e.args[0]) from None
  check_positive("step sizes q", q)
  return fn(z, q, key=key, alpha=alpha, num_candidates=num_candidates, bits=bits)
