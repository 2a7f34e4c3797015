"""Multilevel 2-D discrete wavelet transform (DWT / IDWT) in JAX.

Matches PyWavelets' `dwt2`, `wavedec2` and `waverec2` in their default
boundary mode, 'symmetric' (half-sample symmetric extension: `... x1 x0 | x0 x1
... x_{n-1} | x_{n-1} x_{n-2} ...`), which is what
`skimage.restoration.denoise_wavelet` uses. Any orthogonal discrete wavelet of
PyWavelets works ("db1" = "haar", "db2" ... "db38", "symN", "coifN"); its filter
bank is read on the host at trace time.

Conventions (PyWavelets'):
  * analysis along one axis of length n with a filter of length F gives
    `n_out = floor((n + F - 1) / 2)` coefficients,
    `c[o] = sum_j dec[j] * x_ext[2 o + 1 - j]` (full convolution, odd samples);
  * synthesis of two length-m coefficient arrays gives `2 m - F + 2` samples
    (upsampled full convolution with the reconstruction filters, cropped by
    F - 2 at the start);
  * 2-D detail bands are `(cH, cV, cD)` = pywt's dwtn keys `('da', 'ad', 'dd')`,
    the first letter naming the first transformed axis;
  * multilevel reconstruction trims the approximation to the detail shape when
    odd sizes made it one sample longer (pywt `_match_coeff_dims`).
Everything is linear, differentiable, jit-able and batch-polymorphic over the
axes that are not transformed.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pywt

Details = tuple[jax.Array, jax.Array, jax.Array]


@functools.lru_cache(maxsize=None)
def filter_bank(wavelet: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(dec_lo, dec_hi, rec_lo, rec_hi) of an orthogonal PyWavelets wavelet, float64."""
  if wavelet not in pywt.wavelist(kind="discrete"):
    raise ValueError(f"unknown discrete wavelet {wavelet!r}; see pywt.wavelist(kind='discrete')")
  w = pywt.Wavelet(wavelet)
  if not w.orthogonal:
    raise ValueError(f"wavelet {wavelet!r} is not orthogonal; only orthogonal wavelets are supported")
  return tuple(np.asarray(f, np.float64) for f in w.filter_bank)


def dwt_max_level(data_len: int, wavelet: str) -> int:
  """pywt.dwt_max_level: `floor(log2(n / (F - 1)))`, 0 when `n < F - 1`."""
  f = len(filter_bank(wavelet)[0])
  if data_len < f - 1:
    return 0
  return int(np.floor(np.log2(data_len / (f - 1))))


def _analysis_1d(x: jax.Array, axis: int, lo: np.ndarray, hi: np.ndarray
                 ) -> tuple[jax.Array, jax.Array]:
  """Low- and high-pass analysis of `x` along `axis` (symmetric extension)."""
  n, f = x.shape[axis], len(lo)
  n_out = (n + f - 1) // 2
  left, right = f - 2, 2 * n_out - n  # samples needed before index 0 / after n - 1
  pad = [(0, 0)] * x.ndim
  pad[axis] = (left, right)
  xe = jnp.pad(x, pad, mode="symmetric") if (left or right) else x
  taps = [jax.lax.slice_in_dim(xe, left + 1 - j, left + 1 - j + 2 * n_out - 1, stride=2, axis=axis)
          for j in range(f)]
  dtype = x.dtype
  cl = sum(t * jnp.asarray(lo[j], dtype) for j, t in enumerate(taps))
  ch = sum(t * jnp.asarray(hi[j], dtype) for j, t in enumerate(taps))
  return cl, ch


def _synthesis_1d(a: jax.Array, d: jax.Array, axis: int, lo: np.ndarray, hi: np.ndarray
                  ) -> jax.Array:
  """Inverse of `_analysis_1d`: `2 m - F + 2` samples along `axis`."""
  m, f2 = a.shape[axis], len(lo) // 2
  length = m - f2 + 1
  if length < 1:
    raise ValueError(f"{m} coefficients are too few for a filter of length {len(lo)}")
  dtype = a.dtype
  even, odd = 0, 0
  for j in range(f2):
    sa = jax.lax.slice_in_dim(a, f2 - 1 - j, f2 - 1 - j + length, axis=axis)
    sd = jax.lax.slice_in_dim(d, f2 - 1 - j, f2 - 1 - j + length, axis=axis)
    even = even + sa * jnp.asarray(lo[2 * j], dtype) + sd * jnp.asarray(hi[2 * j], dtype)
    odd = odd + sa * jnp.asarray(lo[2 * j + 1], dtype) + sd * jnp.asarray(hi[2 * j + 1], dtype)
  out = jnp.stack([even, odd], axis=axis + 1)
  shape = list(a.shape)
  shape[axis] = 2 * length
  return out.reshape(shape)


def _norm_axes(x: jax.Array, axes: Sequence[int]) -> tuple[int, int]:
  if len(axes) != 2:
    raise ValueError(f"axes must name two axes, got {axes}")
  a0, a1 = (a % x.ndim for a in axes)
  if a0 == a1:
    raise ValueError(f"axes must be distinct, got {axes}")
  return a0, a1


def dwt2(x: jax.Array, wavelet: str = "db1", *, axes: Sequence[int] = (-2, -1)
         ) -> tuple[jax.Array, Details]:
  """One-level 2-D DWT, as `pywt.dwt2(x, wavelet, mode='symmetric', axes=axes)`.

  Args:
    x: float array; `axes` are transformed, the others are batch axes.
    wavelet: an orthogonal PyWavelets wavelet name.
    axes: the two axes to transform.

  Returns:
    `(cA, (cH, cV, cD))`, each of size `floor((n + F - 1) / 2)` on the axes.
  """
  a0, a1 = _norm_axes(x, axes)
  lo, hi = filter_bank(wavelet)[:2]
  l0, h0 = _analysis_1d(x, a0, lo, hi)
  ll, lh = _analysis_1d(l0, a1, lo, hi)
  hl, hh = _analysis_1d(h0, a1, lo, hi)
  return ll, (hl, lh, hh)


def idwt2(coeffs: tuple[jax.Array, Details], wavelet: str = "db1", *,
          axes: Sequence[int] = (-2, -1)) -> jax.Array:
  """Inverse of `dwt2`, as `pywt.idwt2(coeffs, wavelet, mode='symmetric', axes=axes)`."""
  ll, (hl, lh, hh) = coeffs
  if not ll.shape == hl.shape == lh.shape == hh.shape:
    raise ValueError(f"coefficient shapes differ: {ll.shape}, {hl.shape}, {lh.shape}, {hh.shape}")
  a0, a1 = _norm_axes(ll, axes)
  lo, hi = filter_bank(wavelet)[2:]
  l0 = _synthesis_1d(ll, lh, a1, lo, hi)
  h0 = _synthesis_1d(hl, hh, a1, lo, hi)
  return _synthesis_1d(l0, h0, a0, lo, hi)


def wavedec2(x: jax.Array, wavelet: str = "db1", *, level: int | None = None,
             axes: Sequence[int] = (-2, -1)) -> list:
  """Multilevel 2-D DWT, as `pywt.wavedec2(x, wavelet, mode='symmetric', level=level, axes=axes)`.

  Args:
    x: float array.
    wavelet: an orthogonal PyWavelets wavelet name.
    level: number of levels, default `dwt_max_level(min size over axes)`.
    axes: the two axes to transform.

  Returns:
    `[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]` (coarsest first).
  """
  a0, a1 = _norm_axes(x, axes)
  max_level = min(dwt_max_level(x.shape[a0], wavelet), dwt_max_level(x.shape[a1], wavelet))
  level = max_level if level is None else level
  if level < 0:
    raise ValueError(f"level must be >= 0, got {level}")
  details = []
  a = x
  for _ in range(level):
    a, d = dwt2(a, wavelet, axes=(a0, a1))
    details.append(d)
  return [a] + details[::-1]


def waverec2(coeffs: list, wavelet: str = "db1", *, axes: Sequence[int] = (-2, -1)) -> jax.Array:
  """Inverse of `wavedec2`, as `pywt.waverec2(coeffs, wavelet, mode='symmetric', axes=axes)`."""
  a = coeffs[0]
  for d in coeffs[1:]:
    a0, a1 = _norm_axes(a, axes)
    # The approximation may be one sample longer than the details (odd sizes).
    a = jax.lax.slice(a, [0] * a.ndim,
                      [d[0].shape[i] if i in (a0, a1) else s for i, s in enumerate(a.shape)])
    a = idwt2((a, d), wavelet, axes=axes)
  return a
