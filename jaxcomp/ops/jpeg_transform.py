"""The JPEG-DL layer's pixel <-> DCT-coefficient transform, with adjoint VJPs.

Forward (`coefficients`): [0, 1] images scaled to [0, 255] and shifted by -128;
JFIF YCbCr with a +0.5 chroma offset (`jaxcomp.ops.color`); every plane
ZERO-padded to a multiple of 8 (no chroma subsampling) and cut into 8x8
orthonormal DCT blocks (../shared/JPEG_DL.md, pipeline steps 1-4). Inverse
(`reconstruct`): inverse DCT, crop, the exact inverse colour transform, +128,
/255, unclamped. Grey images (C = 1) skip the colour transform.

Both transforms are affine; their VJPs are the adjoint linear maps, computed
by the other transform's code with the transposed colour matrix (crop is the
adjoint of zero-padding, the inverse DCT that of the DCT). Autodiff of the
channel slicing and stacking would instead emit full-size pad / update-slice
passes (~3x slower).

Blocks are laid out in *bands* of block rows, [nh / rows, C, rows, B, nw, 8, 8],
so that a quantizer can run one band at a time (`rows_per_band`; the JPEG-DL
layer's `band_size`, by default one band: the whole batch); `layer_coefficients`
/ `layer_reconstruct` give the plain [C, B, nh, nw, 8, 8] layout.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.ops import chunking, color, dct

# Added to Y, Cb, Cr after the -128 level shift (JPEG_DL.md; grey: Y only).
CHROMA_OFFSETS = {3: (0.0, 0.5, 0.5), 1: (0.0,)}
# Planes from [0, 1] pixels: PIXEL_SCALE x + LEVEL_SHIFT, then the colour transform;
# pixels from planes: (planes - LEVEL_SHIFT) / PIXEL_SCALE after its inverse.
PIXEL_SCALE, LEVEL_SHIFT = 255.0, -128.0


def colour_matrix(num_channels: int) -> np.ndarray:
  """RGB -> YCbCr for 3 channels, the identity for grey."""
  if num_channels not in CHROMA_OFFSETS:
    raise ValueError(f"the JPEG-DL transform takes 1 or 3 channels, got {num_channels}")
  return color.RGB_TO_YCBCR if num_channels == 3 else np.ones((1, 1))


def _to_coefficients(x, matrix, scale, shift, offsets, rows):
  """`DCT(zero_pad(planes))`, `planes[c] = sum_i matrix[c, i] (scale x_i + shift) + offsets[c]`.

  Returns the blocks in bands of `rows` block rows, [nh / rows, C, rows, B, nw, 8, 8].
  """
  v = x * scale + shift
  planes = color.mix([v[..., i] for i in range(v.shape[-1])], matrix)
  planes = jnp.stack([p + o for p, o in zip(planes, offsets)])            # [C, B, H, W]
  planes = dct.pad_to_multiple(planes, 8, mode="constant")
  c, b, h, w = planes.shape
  blocks = planes.reshape(c, b, h // 8 // rows, rows, 8, w // 8, 8)
  return dct.dct2(blocks.transpose(2, 0, 3, 1, 5, 4, 6))


def _to_pixels(z, height, width, matrix, offsets, scale, shift):
  """`x_i = scale sum_c matrix[i, c] (crop(IDCT(z))_c - offsets[c]) + shift`, [B, H, W, C].

  `z` is in bands, [nh / rows, C, rows, B, nw, 8, 8].
  """
  bands, c, rows, b, nw, _, _ = z.shape
  planes = dct.idct2(z).transpose(1, 3, 0, 2, 5, 4, 6).reshape(c, b, bands * rows * 8, nw * 8)
  planes = planes[:, :, :height, :width]
  planes = color.mix([planes[i] - o for i, o in enumerate(offsets)], matrix)
  return jnp.stack([p * scale + shift for p in planes], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def coefficients(x: jax.Array, height: int, width: int, rows: int) -> jax.Array:
  """Banded DCT coefficients of [B, H, W, C] images in [0, 1] (`height`, `width` = H, W)."""
  del height, width
  c = x.shape[-1]
  return _to_coefficients(x, colour_matrix(c), PIXEL_SCALE, LEVEL_SHIFT, CHROMA_OFFSETS[c], rows)


def _coefficients_fwd(x, height, width, rows):
  return coefficients(x, height, width, rows), None


def _coefficients_bwd(height, width, rows, _, ct):
  del rows
  c = ct.shape[1]
  return (_to_pixels(ct, height, width, colour_matrix(c).T, (0.0,) * c, PIXEL_SCALE, 0.0),)


coefficients.defvjp(_coefficients_fwd, _coefficients_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def reconstruct(z: jax.Array, height: int, width: int, rows: int) -> jax.Array:
  """Inverse of `coefficients`: banded coefficients -> [B, height, width, C] (unclamped)."""
  del rows                                    # = z.shape[2]; the VJP needs it statically
  c = z.shape[1]
  return _to_pixels(z, height, width, np.linalg.inv(colour_matrix(c)), CHROMA_OFFSETS[c],
                    1.0 / PIXEL_SCALE, -LEVEL_SHIFT / PIXEL_SCALE)


def _reconstruct_fwd(z, height, width, rows):
  return reconstruct(z, height, width, rows), None


def _reconstruct_bwd(height, width, rows, _, ct):
  del height, width
  c = ct.shape[-1]
  return (_to_coefficients(ct, np.linalg.inv(colour_matrix(c)).T, 1.0 / PIXEL_SCALE, 0.0,
                           (0.0,) * c, rows),)


reconstruct.defvjp(_reconstruct_fwd, _reconstruct_bwd)


def rows_per_band(shape: tuple[int, ...], band_size: int | None) -> int:
  """The largest divisor of the block-row count whose band holds <= band_size values.

  Args:
    shape: (B, H, W, C) of the images.
    band_size: the most coefficients one band may hold; None: one band, every row.
  """
  b, h, w, c = shape
  nh, per_row = -(-h // 8), c * b * -(-w // 8) * 64
  return nh if band_size is None else chunking.largest_divisor(nh, band_size // per_row)


def coefficient_bounds(num_channels: int) -> np.ndarray:
  """The largest |coefficient| each 8x8 frequency can take for images in [0, 1].

  The level-shifted planes lie in Y in [-128, 127] and Cb, Cr in [-127, 128]
  (255 x - 128 and the +0.5 chroma offset; zero padding adds 0, inside both);
  a frequency's extreme is reached by the block that puts the top of the range
  where its basis function is positive and the bottom where it is negative.
  DC: 64 * 128 / 8 = 1024.

  Returns:
    float64 [C, 8, 8] (Y, Cb, Cr; or Y for grey).
  """
  colour_matrix(num_channels)
  basis = np.einsum("ux,vy->uvxy", dct.dct_matrix(8), dct.dct_matrix(8))   # [8, 8, 8, 8]
  pos, neg = np.clip(basis, 0, None).sum((2, 3)), np.clip(basis, None, 0).sum((2, 3))
  ranges = [(-128.0, 127.0)] + [(-127.0, 128.0)] * (num_channels - 1)
  return np.stack([np.maximum(np.abs(pos * hi + neg * lo), np.abs(pos * lo + neg * hi))
                   for lo, hi in ranges])


def layer_coefficients(x: jax.Array) -> jax.Array:
  """The JPEG-DL layer's DCT coefficients before quantization.

  Args:
    x: [B, H, W, C] float images in [0, 1], C = 3 (RGB) or 1 (grey).

  Returns:
    [C, B, ceil(H/8), ceil(W/8), 8, 8] (float32 or wider): DCT of (Y, Cb, Cr) of
    `255 x - 128` with the +0.5 chroma offset (grey: of `255 x - 128`), zero-padded to
    multiples of 8.
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.moveaxis(coefficients(x, x.shape[1], x.shape[2], 1)[:, :, 0], 0, 2)


def layer_reconstruct(z: jax.Array, height: int, width: int) -> jax.Array:
  """Inverse of `layer_coefficients`: [C, B, nh, nw, 8, 8] -> [B, H, W, C] (unclamped)."""
  return reconstruct(jnp.moveaxis(z, 2, 0)[:, :, None], height, width, 1)
