"""Strided transposed convolution computed as stride-1 convolutions plus depth-to-space.

`conv_transpose(x, kernel, stride)` equals `jax.lax.conv_transpose(x, kernel,
(s, s), "SAME")` (flax `nn.ConvTranspose(padding="SAME")`), but never forms the
zero-dilated input: output phase `(r_h, r_w)` of the `s x s` upsampling only
sees the kernel taps `t = s * d + pad - r`, so each phase is a stride-1
convolution of x ("sub-pixel convolution", Shi et al. 2016, Sec. 2.2) and the
phases are interleaved (a pixel shuffle). XLA's CPU backend runs input-dilated
convolutions (and their gradients) through a slow generic path; this form is
about 10x faster there to train, and equal elsewhere.

Narrow outputs (fewer than `ops.conv.NARROW_CHANNELS` channels: a synthesis
transform's last layer to RGB) are one GEMM instead, on every platform: `z = x @
kernel[t]` for every tap t at once, each phase then the sum of its taps' shifted
planes of z (col2im). XLA:CPU runs convolutions with 3 output channels at 10-20
GFLOP/s, the GEMM at ~90, and the gradients are GEMMs too: the hyperprior's last
layer (8 x 64^2 x 128 -> 3, 5x5, stride 2), value and both gradients, 68.7 -> 26.5 ms
on CPU (docs/performance.md; not measured on accelerators).

Where every phase sees every input offset (stride 1; k = s), all phases are
one convolution with `s*s*C_out` outputs. Otherwise one convolution would pad
every phase to the union of their windows (the codecs' 5x5 kernels at stride 2:
phases of 3x3, 3x2, 2x3 and 2x2 taps, 36 products where 25 are needed; 4x4 at
stride 2: 36 for 16), so each phase is its own convolution with only its taps:
the hyperprior's Adam step (N128 M192, 8 x 128^2) 859 -> 787 ms (one process,
docs/performance.md). The convolutions are `ops.conv.conv_general_dilated`,
whose kernel gradient runs fast on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcomp.ops.conv import NARROW_CHANNELS, conv_general_dilated


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


def _narrow(x: jax.Array, kernel: jax.Array, s: int, offsets: list[np.ndarray],
            phase_taps: list[np.ndarray]) -> jax.Array:
  """The transposed convolution as one GEMM to every tap plus shifted sums -> (N, s*H, s*W, C_out).

  Phase (r_h, r_w) at (h, w) is the sum over its taps of `x[h + d_h, w + d_w] @ kernel[t_h, t_w]`
  (d the tap's offset): z is channels-major, [k*k*C_out, N*H*W], so that a plane is
  contiguous, and split with `lax.split` so that its cotangent is one concatenation.
  """
  k, _, c_in, c_out = kernel.shape
  n, h, w, _ = x.shape
  z = jnp.einsum("tc,pc->tp", kernel.transpose(0, 1, 3, 2).reshape(k * k * c_out, c_in),
                 x.reshape(n * h * w, c_in))
  planes = lax.split(z.reshape(k * k, c_out, n, h, w), [1] * (k * k))
  zero = jnp.zeros((), z.dtype)

  def phase(rh: int, rw: int) -> jax.Array:  # (C_out, N, H, W)
    shifted = [lax.pad(planes[th * k + tw][0], zero, ((0, 0, 0), (0, 0, 0), (-int(dh), int(dh), 0),
                                                       (-int(dw), int(dw), 0)))
               for dh, th in zip(offsets[rh], phase_taps[rh])
               for dw, tw in zip(offsets[rw], phase_taps[rw])]
    return sum(shifted[1:], shifted[0]) if shifted else jnp.zeros((c_out, n, h, w), z.dtype)

  y = jnp.stack([jnp.stack([phase(rh, rw) for rw in range(s)], axis=-1) for rh in range(s)],
                axis=-3)                                                # (C_out, N, H, s, W, s)
  return y.reshape(c_out, n, h * s, w * s).transpose(1, 2, 3, 0)


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
  # Phase r: its offsets d (ascending) and their taps.
  offsets = [d[taps[:, r] >= 0, 0] for r in range(s)]
  phase_taps = [taps[taps[:, r] >= 0, r] for r in range(s)]
  if c_out < NARROW_CHANNELS:  # z holds k*k*C_out values per input pixel
    return _narrow(x, kernel, s, offsets, phase_taps)
  nhwc = ("NHWC", "HWIO", "NHWC")
  if np.all(taps >= 0):  # every phase sees every offset: one convolution, s*s*C_out outputs
    sub = kernel[taps[:, None, :, None], taps[None, :, None, :]]      # (D, D, s, s, C_in, C_out)
    sub = jnp.transpose(sub, (0, 1, 4, 2, 3, 5)).reshape(len(d), len(d), c_in, s * s * c_out)
    pad = (-d_lo, int(d[-1, 0]))
    y = conv_general_dilated(x, sub, (1, 1), (pad, pad), dimension_numbers=nhwc)
    n, h, w, _ = y.shape
    y = y.reshape(n, h, w, s, s, c_out)
  else:  # phase (r_h, r_w): its own taps only, offsets d in [lo, hi] -> padding (-lo, hi)
    def phase(rh: int, rw: int) -> jax.Array:  # (N, H, W, C_out)
      if not (len(offsets[rh]) and len(offsets[rw])):  # no tap reaches this phase (k < s)
        return jnp.zeros((*x.shape[:3], c_out), jnp.result_type(x, kernel))
      pads = [(-int(offsets[r][0]), int(offsets[r][-1])) for r in (rh, rw)]
      return conv_general_dilated(x, kernel[phase_taps[rh][:, None], phase_taps[rw][None, :]],
                                  (1, 1), pads, dimension_numbers=nhwc)

    y = jnp.stack([jnp.stack([phase(rh, rw) for rw in range(s)], axis=3) for rh in range(s)],
                  axis=3)                                               # (N, H, W, s, s, C_out)
    n, h, w = y.shape[:3]
  y = y.transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, h * s, w * s, c_out)
