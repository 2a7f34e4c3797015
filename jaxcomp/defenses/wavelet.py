"""Wavelet denoising (BayesShrink / VisuShrink), batched, as scikit-image does it.

The second half of the pixel-deflection defense (Ch. 4.7-4.8 of the thesis,
papers/001): convert to YCbCr, multilevel DWT, threshold every detail sub-band,
inverse DWT, back to RGB. `denoise_wavelet` has the names and the meaning of
`skimage.restoration.denoise_wavelet(image, sigma, wavelet, mode,
wavelet_levels, convert2ycbcr, method, rescale_sigma, channel_axis=-1)` of
scikit-image 0.26 for float images, computed for a whole batch at once:

  * YCbCr is skimage's `rgb2ycbcr` (ITU-R BT.601 studio range: Y in [16, 235],
    `ycbcr = rgb @ A.T + (16, 128, 128)`, A = `ycbcr_from_rgb`), not JFIF;
  * each YCbCr channel of each image is rescaled to [0, 1] by its own min and
    max (a constant channel is left untouched), denoised, and scaled back;
  * a given sigma (in RGB units) becomes `sqrt(sum_j A_cj^2 sigma_j^2)` per
    YCbCr channel when `rescale_sigma` (skimage >= 0.16), and is then divided by
    the channel's range; with `rescale_sigma=False` only the division happens;
  * `wavelet_levels=None` means `max(dwtn_max_level(H, W) - 3, 1)`;
  * `sigma=None` estimates sigma per channel as `median(|cD_1|) / 0.6745`
    (Donoho & Johnstone 1994, Sec. 4.2) over the nonzero coefficients of the
    finest diagonal band of *the same* decomposition (skimage's
    `_sigma_est_dwt`);
  * BayesShrink (Chang, Yu & Vetterli 2000; Eq. 4.6 of the thesis):
    `T = sigma^2 / sqrt(max(mean(d^2) - sigma^2, eps))` per sub-band;
    VisuShrink: `T = sigma sqrt(2 log(H W))` for all sub-bands;
  * soft: `sign(d) max(|d| - T, 0)`; hard: `d` where `|d| >= T`, else 0;
  * float outputs are not clipped (skimage does not clip float inputs).

One deliberate difference: where skimage's sigma estimate is NaN (a finest
diagonal band that is exactly zero, e.g. a linear ramp), we use sigma = 0 (no
shrinkage) instead of returning NaN.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.defenses.pixel_deflection import move_pixels
from jaxcomp.ops import chunking, dwt, haar_shrink

# skimage.color.colorconv.ycbcr_from_rgb and its offsets (ITU-R BT.601, studio swing).
YCBCR_FROM_RGB = np.array([[65.481, 128.553, 24.966],
                           [-37.797, -74.203, 112.0],
                           [112.0, -93.786, -18.214]])
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
# scipy.stats.norm.ppf(0.75): the MAD of a standard normal.
_MAD_TO_SIGMA = 0.6744897501960817

_METHODS = ("BayesShrink", "VisuShrink")
# PyWavelets' names of the Haar wavelet, which the C++ kernel computes (`ops.haar_shrink`).
HAAR_NAMES = ("db1", "haar")
_MODES = ("soft", "hard")


def _mix(x: jax.Array, matrix: np.ndarray, offset: np.ndarray) -> jax.Array:
  """`x @ matrix.T + offset` on the last axis of size 3, as elementwise multiply-adds
  (XLA's CPU dot with an inner size of 3 is several times slower)."""
  out = sum(x[..., j:j + 1] * jnp.asarray(matrix[:, j], x.dtype) for j in range(3))
  return out + jnp.asarray(offset, x.dtype)


def rgb_to_ycbcr(rgb: jax.Array) -> jax.Array:
  """skimage.color.rgb2ycbcr for [..., 3] RGB in [0, 1]: Y in [16, 235], Cb/Cr in [16, 240]."""
  return _mix(rgb, YCBCR_FROM_RGB, YCBCR_OFFSET)


def ycbcr_to_rgb(ycbcr: jax.Array) -> jax.Array:
  """skimage.color.ycbcr2rgb, the inverse of `rgb_to_ycbcr`."""
  inv = np.linalg.inv(YCBCR_FROM_RGB)
  return _mix(ycbcr, inv, -inv @ YCBCR_OFFSET)


def ycbcr_sigma(sigma: np.ndarray, rescale_sigma: bool) -> np.ndarray:
  """A [3] RGB sigma in YCbCr units: skimage's `_rescale_sigma_rgb2ycbcr`,
  `var_c = sum_j A_cj^2 var_j`, when `rescale_sigma`; else sigma as it is."""
  return np.sqrt((YCBCR_FROM_RGB ** 2) @ (sigma ** 2)) if rescale_sigma else sigma


def estimate_sigma_mad(detail: jax.Array) -> jax.Array:
  """`median(|d|) / 0.6745` over the nonzero entries of axes 1 and 2.

  Args:
    detail: [B, h, w, C] wavelet detail coefficients (finest diagonal band).

  Returns:
    [B, C] the robust noise estimate; 0 where every coefficient is zero.
  """
  mag = jnp.abs(jnp.moveaxis(detail, -1, 1))
  mag = jnp.sort(mag.reshape(*mag.shape[:2], -1), axis=-1)
  n = mag.shape[-1]
  nonzero = jnp.sum(mag > 0, axis=-1)
  first = n - nonzero  # zeros sort first
  hi_idx = jnp.clip(first + nonzero // 2, 0, n - 1)
  lo_idx = jnp.clip(jnp.where(nonzero % 2 == 1, hi_idx, hi_idx - 1), 0, n - 1)
  take = lambda i: jnp.take_along_axis(mag, i[..., None], axis=-1)[..., 0]
  median = 0.5 * (take(lo_idx) + take(hi_idx))
  return jnp.where(nonzero > 0, median / _MAD_TO_SIGMA, 0.0)


def plane_reduce(x: jax.Array, op) -> jax.Array:
  """`op(x, axis=(1, 2), keepdims=True)` for [B, h, w, C], `op` one of jnp.min / max / sum.

  Computed as `op` over the rows (axis 1 of the [B, h, w * C] view: an elementwise
  pass over contiguous rows) and then over the short [B, w, C] remainder: XLA:CPU's
  reduction over both spatial axes with the channels minor ran 5x slower (1.23 against
  0.25 ms for min and max of 4x224x224x3).
  """
  b, h, w, c = x.shape
  rows = op(x.reshape(b, h, w * c), axis=1).reshape(b, w, c)
  # The barrier keeps XLA from merging the two reductions back into the slow one.
  return op(jax.lax.optimization_barrier(rows), axis=1).reshape(b, 1, 1, c)


def levels(height: int, width: int, wavelet: str, wavelet_levels: int | None) -> int:
  """The number of DWT levels: `wavelet_levels`, or skimage's default for None,
  `max(dwtn_max_level(H, W) - 3, 1)`."""
  if wavelet_levels is not None:
    return int(wavelet_levels)
  return max(min(dwt.dwt_max_level(height, wavelet), dwt.dwt_max_level(width, wavelet)) - 3, 1)


def _threshold(d: jax.Array, t: jax.Array, mode: str) -> jax.Array:
  if mode == "soft":
    return jnp.sign(d) * jnp.maximum(jnp.abs(d) - t, 0.0)
  return jnp.where(jnp.abs(d) < t, 0.0, d)


def wavelet_threshold(x: jax.Array, sigma: jax.Array | None, *, wavelet: str, mode: str,
                      wavelet_levels: int | None, method: str) -> jax.Array:
  """Thresholds the detail sub-bands of each channel (skimage `_wavelet_threshold`).

  Args:
    x: [B, H, W, C] float images; every (image, channel) plane is denoised alone.
    sigma: [B, C] noise standard deviation per plane, or None to estimate it.
    wavelet, mode, wavelet_levels, method: as `denoise_wavelet`.

  Returns:
    [B, H, W, C] denoised images.
  """
  h, w = x.shape[1:3]
  wavelet_levels = levels(h, w, wavelet, wavelet_levels)
  coeffs = dwt.wavedec2(x, wavelet, level=wavelet_levels, axes=(1, 2))
  if sigma is None:
    sigma = estimate_sigma_mad(coeffs[-1][2])
  sigma = sigma[:, None, None, :]
  var = sigma * sigma
  eps = jnp.finfo(x.dtype).eps

  def thresh(d):
    if method == "BayesShrink":
      dvar = plane_reduce(d * d, jnp.sum) / (d.shape[1] * d.shape[2])
      return var / jnp.sqrt(jnp.maximum(dvar - var, eps))
    return sigma * np.sqrt(2.0 * np.log(h * w))

  details = [tuple(_threshold(d, thresh(d), mode) for d in level) for level in coeffs[1:]]
  out = dwt.waverec2([coeffs[0]] + details, wavelet, axes=(1, 2))
  return out[:, :h, :w]


def denoise_wavelet(images: jax.Array, *, sigma: float | Sequence[float] | None = None,
                    wavelet: str = "db1", mode: str = "soft", wavelet_levels: int | None = None,
                    convert2ycbcr: bool = True, method: str = "BayesShrink",
                    rescale_sigma: bool = True) -> jax.Array:
  """Wavelet denoising of a batch, skimage's `denoise_wavelet(..., channel_axis=-1)`.

  Args:
    images: [B, H, W, C] float RGB (C = 3 when `convert2ycbcr`), nominally in [0, 1].
    sigma: noise standard deviation in the units of `images` (0.04 in the thesis,
      Table 4.1), a scalar or one per channel; None estimates it per image and channel.
    wavelet: orthogonal PyWavelets wavelet name ("db1" = "haar" in the thesis).
    mode: "soft" or "hard" thresholding (Sec. 4.7.1).
    wavelet_levels: number of DWT levels; None = `max(max_level - 3, 1)`.
    convert2ycbcr: denoise in skimage's YCbCr, each channel rescaled to [0, 1].
    method: "BayesShrink" (Eq. 4.6) or "VisuShrink".
    rescale_sigma: scale a given sigma into YCbCr units (skimage >= 0.16 meaning).

  Returns:
    [B, H, W, C] denoised images, same dtype, not clipped. The Haar wavelet with a
    given sigma on 3 channels in float32 runs as one C++ kernel on CPU
    (`ops.haar_shrink`, `denoise_moved`).
  """
  empty = jnp.zeros((images.shape[0], 0), jnp.int32)
  return denoise_moved(images, empty, empty, sigma=sigma, wavelet=wavelet, mode=mode,
                       wavelet_levels=wavelet_levels, convert2ycbcr=convert2ycbcr, method=method,
                       rescale_sigma=rescale_sigma, clip=False, chunk_bytes=None)


def denoise_moved(images: jax.Array, dest: jax.Array, src: jax.Array, *,
                  sigma: float | Sequence[float] | None, wavelet: str, mode: str,
                  wavelet_levels: int | None, convert2ycbcr: bool, method: str,
                  rescale_sigma: bool, clip: bool, chunk_bytes: int | None) -> jax.Array:
  """`denoise_wavelet` of the images after pixel moves (`pixel_deflection.move_pixels`).

  Args:
    images: [B, H, W, C] float images.
    dest, src: [B, K] flat pixel indices of the moves (K may be 0).
    sigma ... rescale_sigma: `denoise_wavelet`'s.
    clip: clip the result to [0, 1].
    chunk_bytes: the XLA formulation runs over chunks of about this many float32
      bytes of images (`ops.chunking`); None: the whole batch at once.

  Returns:
    [B, H, W, C]. With the Haar wavelet, a given sigma, 3 channels and float32 images
    whose sides the levels divide, one C++ kernel on one CPU device
    (`ops.haar_shrink`); XLA's formulation otherwise, and for the gradient.
  """
  chex.assert_rank(images, 4)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
  b, h, w, c = images.shape
  if convert2ycbcr and c != 3:
    raise ValueError(f"convert2ycbcr needs 3 RGB channels, got images of shape {images.shape}")
  if method not in _METHODS:
    raise ValueError(f"unknown method {method!r}; known: {_METHODS}")
  if mode not in _MODES:
    raise ValueError(f"unknown mode {mode!r}; known: {_MODES}")
  if wavelet_levels is not None and (int(wavelet_levels) != wavelet_levels or wavelet_levels < 1):
    raise ValueError(f"wavelet_levels must be a positive integer or None, got {wavelet_levels}")
  dwt.filter_bank(wavelet)  # validates the name
  if sigma is not None:
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (c,)) if np.ndim(sigma) == 0 else \
        np.asarray(sigma, np.float64)
    if sigma.shape != (c,) or np.any(sigma < 0):
      raise ValueError(f"sigma must be >= 0, a scalar or one per channel ({c}), got {sigma}")
  settings = dict(sigma=sigma, wavelet=wavelet, mode=mode, wavelet_levels=wavelet_levels,
                  convert2ycbcr=convert2ycbcr, method=method, rescale_sigma=rescale_sigma)

  def one_chunk(x, dest, src):
    x = _denoise(move_pixels(x, dest, src), **settings)
    return jnp.clip(x, 0.0, 1.0) if clip else x

  def reference(x, dest, src):
    chunk = b if chunk_bytes is None else chunking.images_per_chunk(b, h * w * c * 4, chunk_bytes)
    return chunking.map_chunks(one_chunk, chunk, x, dest, src)

  n_levels = levels(h, w, wavelet, wavelet_levels)
  if (sigma is None or wavelet not in HAAR_NAMES
      or not haar_shrink.supported(images.shape, images.dtype, n_levels)):
    return reference(images, dest, src)
  if convert2ycbcr:
    sigma = ycbcr_sigma(sigma, rescale_sigma)
    colour, offset = YCBCR_FROM_RGB, YCBCR_OFFSET
  else:
    colour, offset = np.eye(3), np.zeros(3)
  config = haar_shrink.Shrinkage(
      sigma=tuple(float(v) for v in sigma), levels=n_levels, ycbcr=bool(convert2ycbcr),
      colour=tuple(colour.ravel().tolist()), offset=tuple(offset.tolist()), method=method,
      mode=mode, clip=bool(clip))
  return haar_shrink.apply(images, dest, src, config, reference)


def _denoise(images: jax.Array, *, sigma: np.ndarray | None, wavelet: str, mode: str,
             wavelet_levels: int | None, convert2ycbcr: bool, method: str,
             rescale_sigma: bool) -> jax.Array:
  """`denoise_wavelet` in XLA's ops, the arguments checked (sigma: [C] or None)."""
  kw = dict(wavelet=wavelet, mode=mode, wavelet_levels=wavelet_levels, method=method)
  c = images.shape[-1]
  batch_channels = (images.shape[0], c)
  if not convert2ycbcr:
    sig = None if sigma is None else jnp.broadcast_to(jnp.asarray(sigma, images.dtype),
                                                      batch_channels)
    return wavelet_threshold(images, sig, **kw)

  y = rgb_to_ycbcr(images)
  lo = plane_reduce(y, jnp.min)
  scale = plane_reduce(y, jnp.max) - lo
  constant = scale == 0
  scale = jnp.where(constant, 1.0, scale)
  sig = None
  if sigma is not None:
    sig = jnp.asarray(ycbcr_sigma(sigma, rescale_sigma), images.dtype) / scale[:, 0, 0, :]
  den = wavelet_threshold((y - lo) / scale, sig, **kw) * scale + lo
  return ycbcr_to_rgb(jnp.where(constant, y, den))
