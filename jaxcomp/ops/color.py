"""JFIF (ITU-T T.871) full-range RGB <-> YCbCr.

`Y = .299 R + .587 G + .114 B`, `Cb = (B - Y) / 1.772 + offset`,
`Cr = (R - Y) / 1.402 + offset` (T.871 Sec. 7; SPEC Sec. 1). Standard JPEG works on
samples in [0, 255] with `offset = 128`; the JPEG-DL layer shifts the samples by -128
first and uses `offset = 0.5` (JPEG_DL.md, pipeline step 2). The inverse is the exact
matrix inverse of the forward transform (computed in float64), not libjpeg's rounded
constants (1.402, 0.34414, 0.71414, 1.772), which agree to 5 digits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Rows: Y, Cb, Cr; columns: R, G, B. Cb and Cr rows are (B - Y)/1.772 and (R - Y)/1.402.
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                         [-0.299 / 1.772, -0.587 / 1.772, 0.886 / 1.772],
                         [0.701 / 1.402, -0.587 / 1.402, -0.114 / 1.402]])
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)


def _channels(x: jax.Array, axis: int) -> list[jax.Array]:
  if x.ndim == 0 or x.shape[axis] != 3:
    raise ValueError(f"expected 3 channels on axis {axis}, got shape {x.shape}")
  return [jnp.take(x, i, axis=axis) for i in range(3)]


def mix(channels: list[jax.Array], matrix: np.ndarray) -> list[jax.Array]:
  """`matrix @ channels` written out as scalar multiply-adds (XLA fuses them into one loop).

  Args:
    channels: C arrays of one shape.
    matrix: [C_out, C] constants.

  Returns:
    C_out arrays: `out[o] = sum_i matrix[o, i] channels[i]`.
  """
  return [sum(float(matrix[o, i]) * channels[i] for i in range(len(channels)))
          for o in range(matrix.shape[0])]


def rgb_to_ycbcr(rgb: jax.Array, *, offset: float = 128.0, axis: int = -1) -> jax.Array:
  """JFIF RGB -> YCbCr, channels on `axis`.

  Args:
    rgb: float array with 3 channels on `axis` (any range; [0, 255] for JPEG).
    offset: added to Cb and Cr: 128 for [0, 255] samples, 0.5 in JPEG-DL (after the
      -128 level shift), 0 for the purely linear transform.
    axis: channel axis.

  Returns:
    Same shape and dtype: Y, Cb, Cr on `axis`.
  """
  y, cb, cr = mix(_channels(rgb, axis), RGB_TO_YCBCR)
  return jnp.stack([y, cb + offset, cr + offset], axis=axis)


def ycbcr_to_rgb(ycbcr: jax.Array, *, offset: float = 128.0, axis: int = -1) -> jax.Array:
  """Exact inverse of `rgb_to_ycbcr` with the same `offset`; same shapes and dtype."""
  y, cb, cr = _channels(ycbcr, axis)
  return jnp.stack(mix([y, cb - offset, cr - offset], YCBCR_TO_RGB), axis=axis)
