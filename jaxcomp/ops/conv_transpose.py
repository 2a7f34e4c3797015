"""Strided transposed convolution computed as a stride-1 convolution plus depth-to-space.

`conv_transpose(x, kernel, stride)` equals `jax.lax.conv_transpose(x, kernel,
(s, s), "SAME")` (flax `nn.ConvTranspose(padding="SAME")`), but never forms the
zero-dilated input: output phase `(r_h, r_w)` of the `s x s` upsampling only
sees the kernel taps `t = s * d + pad - r`, so all phases are one stride-1
convolution with `s*s*C_out` outputs ("sub-pixel convolution", Shi et al. 2016,
Sec. 2.2) followed by a pixel shuffle. XLA's CPU backend runs input-dilated
convolutions (and their gradients) through a slow generic path; this form is
about 10x faster there to train, and equal elsewhere. The stride-1 convolution
is `ops.conv.conv_general_dilated`, whose kernel gradient is a GEMM on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.ops.conv import conv_general_dilated


def _same_padding(k: int, s: int) -> int:
  """Low-side padding of `lax.conv_transpose(..., "SAME")` on the dilated input."""
  pad_len = k + s - 2
  return k - 1 if s > k - 1 else -(-pad_len // 2)


def _taps(k: int, s: int) -> tuple[np.ndarray, np.ndarray, int]:
  """For one axis: tap index `t[d, r]` (or -1) of offset d, phase r; and the lowest offset."""
  pad = _same_padding(k, s)
  d_lo = -(pad // s)                      # smallest d with s*d + pad - r in [0, k) for some r
  d_hi = (k - 1 + s - 1 - pad) // s       # largest such d
  d = np.arange(d_lo, d_hi + 1)[:, None]
  r = np.arange(s)[None, :]
  t = s * d + pad - r
  return np.where((t >= 0) & (t < k), t, -1), d, d_lo


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (stride, stride), "SAME")` for NHWC / HWIO.

  Args:
    x: `(N, H, W, C_in)` float.
    kernel: `(k, k, C_in, C_out)` (flax `ConvTranspose` layout, not transposed).
    stride: upsampling factor s >= 1.

  Returns:
    `(N, s*H, s*W, C_out)`.
  """
  k, _, c_in, c_out = kernel.shape
  if kernel.shape[1] != k or x.shape[-1] != c_in:
    raise ValueError(f"conv_transpose: kernel {kernel.shape} does not fit input {x.shape}")
  s = stride
  taps, d, d_lo = _taps(k, s)
  # kernel -> (D, D, C_in, s, s, C_out) with zeros where a phase has no tap.
  valid = taps >= 0
  safe = np.where(valid, taps, 0)
  sub = kernel[safe[:, None, :, None], safe[None, :, None, :]]      # (D, D, s, s, C_in, C_out)
  mask = (valid[:, None, :, None] & valid[None, :, None, :]).astype(kernel.dtype)
  sub = sub * mask[..., None, None]
  sub = jnp.transpose(sub, (0, 1, 4, 2, 3, 5)).reshape(len(d), len(d), c_in, s * s * c_out)
  pad = (-d_lo, int(d[-1, 0]))
  y = conv_general_dilated(x, sub, (1, 1), (pad, pad), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  n, h, w, _ = y.shape
  y = y.reshape(n, h, w, s, s, c_out).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, h * s, w * s, c_out)
