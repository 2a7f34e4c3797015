"""Blockwise orthonormal 2-D DCT-II (the JPEG transform) as matrix products.

For an 8x8 block `X` the orthonormal DCT-II is `C = D X D^T` with
`D[u, x] = c(u) cos((2x + 1) u pi / 16)`, `c(0) = sqrt(1/8)`, `c(u > 0) = sqrt(2/8)`
(SPEC Sec. 1; identical to the FDCT of ITU-T T.81 Sec. A.3.3, whose
`1/4 C_u C_v` equals `c(u) c(v)`).
It is computed as one matrix product of the flattened block with the 64x64 Kronecker
product `D (x) D` (`vec(D X D^T) = (D (x) D) vec(X)` for row-major `vec`): one GEMM with
K = 64 is faster on CPU than two K = 8 products plus the transposes between them.
`D` is orthogonal, so the inverse is the transpose.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 8


@functools.cache
def dct_matrix(n: int = BLOCK) -> np.ndarray:
  """Orthonormal DCT-II matrix `D[u, x]`, float64 [n, n]; `D @ D.T = I`."""
  x = np.arange(n)
  d = np.cos((2 * x[None, :] + 1) * x[:, None] * np.pi / (2 * n)) * np.sqrt(2.0 / n)
  d[0] /= np.sqrt(2.0)
  return d


@functools.cache
def _kron(n: int) -> np.ndarray:
  d = dct_matrix(n)
  return np.kron(d, d)


def pad_to_multiple(x: jax.Array, multiple: int, *, axes: tuple[int, ...] = (-2, -1),
                    mode: str = "edge") -> jax.Array:
  """Pads `axes` at their end up to a multiple of `multiple`.

  Args:
    x: any array.
    multiple: target multiple (8 for JPEG blocks, 16 for 4:2:0 MCUs).
    axes: axes to pad.
    mode: "edge" (replicate the last row / column, as libjpeg does) or "constant"
      (zeros, as the JPEG-DL layer does).

  Returns:
    `x` with each of `axes` padded to `ceil(n / multiple) * multiple`.
  """
  if mode not in ("edge", "constant"):
    raise ValueError(f"mode must be 'edge' or 'constant', got {mode!r}")
  widths = [(0, 0)] * x.ndim
  for a in axes:
    widths[a] = (0, -x.shape[a] % multiple)
  if all(w == (0, 0) for w in widths):
    return x
  return jnp.pad(x, widths, mode=mode)


def blockify(x: jax.Array, block: int = BLOCK) -> jax.Array:
  """[..., H, W] -> [..., H/b, W/b, b, b]; H and W must be multiples of `block`."""
  *lead, h, w = x.shape
  if h % block or w % block:
    raise ValueError(f"height and width must be multiples of {block}, got {h}x{w}; "
                     "pad with pad_to_multiple first")
  x = x.reshape(*lead, h // block, block, w // block, block)
  return jnp.swapaxes(x, -3, -2)


def unblockify(blocks: jax.Array) -> jax.Array:
  """Inverse of `blockify`: [..., nh, nw, b, b] -> [..., nh * b, nw * b]."""
  *lead, nh, nw, b, b2 = blocks.shape
  return jnp.swapaxes(blocks, -3, -2).reshape(*lead, nh * b, nw * b2)


def _apply(blocks: jax.Array, matrix: np.ndarray) -> jax.Array:
  *lead, b, b2 = blocks.shape
  if b != b2:
    raise ValueError(f"blocks must be square, got shape {blocks.shape}")
  flat = blocks.reshape(*lead, b * b2)
  out = jnp.matmul(flat, jnp.asarray(matrix, blocks.dtype),
                   precision=jax.lax.Precision.HIGHEST)
  return out.reshape(blocks.shape)


def dct2(blocks: jax.Array) -> jax.Array:
  """Orthonormal 2-D DCT-II of each block: `D X D^T`; [..., b, b] -> [..., b, b]."""
  return _apply(blocks, _kron(blocks.shape[-1]).T)


def idct2(coefficients: jax.Array) -> jax.Array:
  """Inverse of `dct2`: `D^T C D`; [..., b, b] -> [..., b, b]."""
  return _apply(coefficients, _kron(coefficients.shape[-1]))


def block_dct(x: jax.Array) -> jax.Array:
  """8x8 block DCT of planes: [..., H, W] (multiples of 8) -> [..., H/8, W/8, 8, 8]."""
  return dct2(blockify(x))


def block_idct(coefficients: jax.Array) -> jax.Array:
  """Inverse of `block_dct`: [..., nh, nw, 8, 8] -> [..., 8 nh, 8 nw]."""
  return unblockify(idct2(coefficients))
