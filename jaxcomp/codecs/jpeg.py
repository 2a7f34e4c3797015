"""Standard JPEG (baseline, as libjpeg computes it) as pure, jit-able JAX functions.

Encoder (SPEC Sec. 1): samples in [0, 255]; edge-replication padding to a multiple of
8 (16 with 4:2:0), as libjpeg extends the right and bottom edges; JFIF YCbCr and the
-128 level shift; 4:2:0 chroma by libjpeg's 2x2 box average (`h2v2_downsample`);
orthonormal 8x8 DCT; quantization by `quantizer` with the IJG tables at `quality`
(libjpeg's integer scaling) or with given `tables`.
Decoder: dequantize, inverse DCT, +128, each plane limited to [0, 255] (libjpeg's
range limit); 4:2:0 chroma back to full size by libjpeg's "fancy" triangular
upsampling (`h2v2_fancy_upsample`: weights 3/4, 1/4 in each direction, edge samples
replicated at the image border); YCbCr -> RGB, clip to [0, 255], crop.

Samples are rounded wherever libjpeg holds 8-bit samples (after the colour
conversion, the downsampling, the inverse DCT, the upsampling and the output colour
conversion) with `round_st`: the forward pass is integer like libjpeg's, the gradient
passes straight through. libjpeg's integer islow DCT and its rounding biases remain;
this float version matches Pillow's encode + decode to > 40 dB PSNR (the values
measured on Kodak are in tests/codecs/jpeg_test.py). uint8 images come back as uint8,
float images as floats in [0, 1] (multiples of 1/255).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.ops import color, dct
from jaxcomp.ops.jpeg_tables import check_quality, quality_tables
from jaxcomp.ops.quantization import QUANTIZERS, check_positive, quantize_dequantize
from jaxcomp.ops.rounding import round_st

SUBSAMPLINGS = ("4:2:0", "4:4:4")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class JpegCoefficients:
  """Quantized DCT coefficients of a batch, ready for `jpeg_decode_coefficients`.

  Attributes:
    luma: [B, H8/8, W8/8, 8, 8] quantization indices `z_hat / q` of Y (integers for the
      hard quantizer; H8, W8 are the padded sizes).
    chroma: [B, 2, Hc/8, Wc/8, 8, 8] indices of Cb and Cr (Hc = H8 / 2 with 4:2:0).
    luma_table, chroma_table: [8, 8] float step sizes used.
    height, width: original image size (static).
    subsampling: "4:2:0" or "4:4:4" (static).
    uint8: whether the input was uint8 (static; the decode returns the same dtype).
  """
  luma: jax.Array
  chroma: jax.Array
  luma_table: jax.Array
  chroma_table: jax.Array
  height: int = dataclasses.field(metadata=dict(static=True))
  width: int = dataclasses.field(metadata=dict(static=True))
  subsampling: str = dataclasses.field(metadata=dict(static=True))
  uint8: bool = dataclasses.field(metadata=dict(static=True))


def check_images(images: jax.Array, *, channels: tuple[int, ...] = (3,),
                 allow_uint8: bool = True) -> None:
  """Raises ValueError unless `images` is [B, H, W, C] uint8, or float in [0, 1].

  The value range is checked only on concrete arrays (not under `jit`).
  """
  if images.ndim != 4 or images.shape[-1] not in channels:
    raise ValueError(f"images must have shape [B, H, W, C] with C in {channels}, "
                     f"got shape {images.shape}")
  if images.shape[1] < 1 or images.shape[2] < 1:
    raise ValueError(f"images must be at least 1x1, got shape {images.shape}")
  if images.dtype == jnp.uint8 and allow_uint8:
    return
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be {'uint8 or ' if allow_uint8 else ''}floating point, "
                     f"got dtype {images.dtype}")
  if not isinstance(images, jax.core.Tracer):      # numpy: a constant under `jit` stays concrete
    values = np.asarray(images)
    lo, hi = float(values.min()), float(values.max())
    if lo < 0.0 or hi > 1.0 or not np.isfinite(lo + hi):
      raise ValueError(f"float images must lie in [0, 1], got values in [{lo}, {hi}]")


def _tables(quality, tables, dtype) -> tuple[jax.Array, jax.Array]:
  if (quality is None) == (tables is None):
    raise ValueError("give exactly one of quality= or tables=")
  if quality is not None:
    tables = quality_tables(check_quality(quality))
  if len(tables) != 2:
    raise ValueError("tables must be a pair (luma [8, 8], chroma [8, 8])")
  luma, chroma = (jnp.asarray(t, dtype) for t in tables)
  if luma.shape != (8, 8) or chroma.shape != (8, 8):
    raise ValueError(f"tables must be [8, 8], got {luma.shape} and {chroma.shape}")
  check_positive("luma table", luma)
  check_positive("chroma table", chroma)
  return luma, chroma


def downsample_box(planes: jax.Array) -> jax.Array:
  """libjpeg's 4:2:0 `h2v2_downsample`: 2x2 means; [..., 2h, 2w] -> [..., h, w]."""
  *lead, h, w = planes.shape
  return planes.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def _upsample_axis(x: jax.Array, axis: int) -> jax.Array:
  n = x.shape[axis]
  first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
  last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
  prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)
  nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis)
  out = jnp.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis=axis + 1)
  return out.reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1:])


def upsample_fancy(planes: jax.Array) -> jax.Array:
  """libjpeg's `h2v2_fancy_upsample` (triangle filter): [..., h, w] -> [..., 2h, 2w].

  Output sample `2i` is `3/4 x[i] + 1/4 x[i-1]`, `2i + 1` is `3/4 x[i] + 1/4 x[i+1]`,
  in each direction, with `x[-1] = x[0]` and `x[h] = x[h-1]` (libjpeg's edge rule).
  """
  return _upsample_axis(_upsample_axis(planes, planes.ndim - 2), planes.ndim - 1)


def jpeg_coefficients(images: jax.Array, *, quality: int | None = None,
                      tables=None, subsampling: str = "4:2:0", quantizer: str = "hard",
                      key: jax.Array | None = None, alpha: float | jax.Array = 5.0
                      ) -> JpegCoefficients:
  """JPEG encoder up to the quantized coefficients (no entropy coding).

  Args:
    images: [B, H, W, 3] RGB, uint8 or float in [0, 1]; any H, W >= 1.
    quality: IJG quality 1..100 (libjpeg's tables), or
    tables: (luma, chroma) step sizes, each [8, 8], finite and > 0 (natural order;
      arrays may be traced, so gradients reach them with the differentiable
      quantizers; only concrete ones are checked).
    subsampling: "4:2:0" (libjpeg's and Pillow's default) or "4:4:4".
    quantizer: "hard" | "ste" | "noise" | "soft" (`jaxcomp.ops.quantization`).
    key: PRNG key for quantizer="noise".
    alpha: hardness of quantizer="soft", finite and > 0 (JPEG-DL's L = 5, b = 8
      otherwise).

  Returns:
    `JpegCoefficients` (indices `z_hat / q`, tables, static size information).
  """
  check_images(images)
  if subsampling not in SUBSAMPLINGS:
    raise ValueError(f"unknown subsampling {subsampling!r}; expected one of {SUBSAMPLINGS}")
  if quantizer not in QUANTIZERS:
    raise ValueError(f"unknown quantizer {quantizer!r}; expected one of {QUANTIZERS.names()}")
  if quantizer == "soft":
    check_positive("alpha", alpha)
  uint8 = images.dtype == jnp.uint8
  dtype = jnp.float32 if uint8 else jnp.promote_types(images.dtype, jnp.float32)
  x = images.astype(dtype) if uint8 else images.astype(dtype) * 255.0
  luma_q, chroma_q = _tables(quality, tables, dtype)
  _, height, width, _ = images.shape
  sub = subsampling == "4:2:0"
  x = dct.pad_to_multiple(x, 16 if sub else 8, axes=(1, 2), mode="edge")
  ycc = round_st(color.rgb_to_ycbcr(x - 128.0, offset=0.0))      # level-shifted samples
  y, chroma = ycc[..., 0], jnp.moveaxis(ycc[..., 1:], -1, 1)      # [B, H, W], [B, 2, H, W]
  if sub:
    chroma = round_st(downsample_box(chroma))
  keys = (None, None) if key is None else tuple(jax.random.split(key))

  def indices(planes, q, k):
    i = quantize_dequantize(dct.block_dct(planes), q, quantizer=quantizer, key=k, alpha=alpha) / q
    if quantizer in ("hard", "ste"):           # exact integers (z_hat / q is off by ulps)
      i = i + jax.lax.stop_gradient(jnp.round(i) - i)
    return i

  return JpegCoefficients(indices(y, luma_q, keys[0]), indices(chroma, chroma_q, keys[1]),
                          luma_q, chroma_q, height, width, subsampling, bool(uint8))


def jpeg_decode_coefficients(coefficients: JpegCoefficients) -> jax.Array:
  """JPEG decoder from quantized coefficients: [B, H, W, 3], uint8 or float in [0, 1]."""
  c = coefficients
  y = dct.block_idct(c.luma * c.luma_table) + 128.0
  chroma = dct.block_idct(c.chroma * c.chroma_table) + 128.0
  y, chroma = (jnp.clip(round_st(p), 0.0, 255.0) for p in (y, chroma))
  if c.subsampling == "4:2:0":
    chroma = round_st(upsample_fancy(chroma[..., :(c.height + 1) // 2, :(c.width + 1) // 2]))
  ycc = jnp.stack([y[:, :c.height, :c.width], chroma[:, 0, :c.height, :c.width],
                   chroma[:, 1, :c.height, :c.width]], axis=-1)
  rgb = jnp.clip(round_st(color.ycbcr_to_rgb(ycc, offset=128.0)), 0.0, 255.0)
  return rgb.astype(jnp.uint8) if c.uint8 else rgb / 255.0


def jpeg(images: jax.Array, *, quality: int | None = None, tables=None,
         subsampling: str = "4:2:0", quantizer: str = "hard", key: jax.Array | None = None,
         alpha: float | jax.Array = 5.0) -> jax.Array:
  """JPEG compression and decompression: `jpeg_decode_coefficients(jpeg_coefficients(.))`.

  Args: as `jpeg_coefficients`.

  Returns:
    Decoded images, [B, H, W, 3], uint8 if `images` is uint8, else float in [0, 1].
  """
  return jpeg_decode_coefficients(jpeg_coefficients(
      images, quality=quality, tables=tables, subsampling=subsampling,
      quantizer=quantizer, key=key, alpha=alpha))
