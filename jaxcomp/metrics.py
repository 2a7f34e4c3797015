"""Image-quality and rate metrics: PSNR, PSNR-S, SSIM, MS-SSIM, bits per pixel.

SSIM (Wang et al. 2004, Eq. 13) with an 11x11 Gaussian window (sigma 1.5),
K1 = 0.01, K2 = 0.03, statistics over the *valid* window positions (as
`tf.image.ssim` and skimage's `structural_similarity(gaussian_weights=True,
use_sample_covariance=False)`, which crops the border). MS-SSIM (Wang,
Simoncelli, Bovik 2003, Eq. 7) as pytorch-msssim 1.0 computes it: contrast-structure
terms at scales 1..4 and the full SSIM at scale 5, 2x2 average pooling between
scales (an odd side is zero-padded, the zero counted in the mean), exponents
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333); negative terms are clipped at 0
before the power. All are computed per channel and averaged over channels.
Inputs are NHWC floats with values in `[0, max_val]`; results are per image,
shape `(N,)`.

`luma_420` gives the plane on which the MS-ROI thesis measured Table 2.1 (VQMT
on ffmpeg's yuv420p luma): BT.601 studio-range Y, on the 8-bit grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.ops.color import RGB_TO_YCBCR

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(x: jax.Array, y: jax.Array) -> None:
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"expected two NHWC batches of equal shape, got {x.shape} and {y.shape}")


def mse(x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean squared error per image, `(N,)`."""
  _check_pair(x, y)
  return jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(1, 2, 3))


def psnr(x: jax.Array, y: jax.Array, *, max_val: float = 1.0) -> jax.Array:
  """`10 log10(max_val^2 / MSE)` per image, `(N,)`, in dB (inf for identical images)."""
  return 10.0 * jnp.log10(max_val ** 2 / mse(x, y))


def bits_per_pixel(likelihoods: dict | list | jax.Array, num_pixels: int) -> jax.Array:
  """`sum(-log2 p) / num_pixels` over every likelihood array of the pytree."""
  return sum(jnp.sum(-jnp.log2(p)) for p in jax.tree.leaves(likelihoods)) / num_pixels


def _gaussian_window(size: int, sigma: float) -> jax.Array:
  r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  g = jnp.exp(-0.5 * jnp.square(r / sigma))
  return g / g.sum()


def _filter_valid(x: jax.Array, window: jax.Array) -> jax.Array:
  """Separable per-channel correlation with `window` over H and W of NHWC `x`, VALID only.

  Each pass is a dense convolution with a diagonal [k, 1, C, C] kernel rather than a
  depthwise one (`feature_group_count=C`): XLA:CPU runs depthwise convolutions on a
  slow generic path, the dense one on its Eigen fast path (MS-SSIM of two 768x512
  images, jax 0.10.2, one run on a busy 2-core machine: 14 s depthwise, 1.9 s dense;
  shifted-slice sums ran in 1.4 s but took 3x longer to compile, and their gradient more).
  """
  eye = jnp.eye(x.shape[-1], dtype=x.dtype)
  dn = ("NHWC", "HWIO", "NHWC")
  prec = jax.lax.Precision.HIGHEST
  x = jax.lax.conv_general_dilated(x, window[:, None, None, None] * eye, (1, 1), "VALID",
                                   dimension_numbers=dn, precision=prec)
  return jax.lax.conv_general_dilated(x, window[None, :, None, None] * eye, (1, 1), "VALID",
                                      dimension_numbers=dn, precision=prec)


def _ssim_terms(x, y, *, max_val, filter_size, sigma, k1, k2):
  """Per-image, per-channel mean SSIM and mean contrast-structure, each `(N, C)`."""
  if min(x.shape[1:3]) < filter_size:
    raise ValueError(f"images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                     f"{filter_size}x{filter_size} SSIM window")
  w = _gaussian_window(filter_size, sigma)
  # One depthwise filtering of the five maps stacked on the channel axis.
  mu_x, mu_y, xx, yy, xy = jnp.split(
      _filter_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), w), 5, axis=-1)
  var_x = xx - mu_x * mu_x
  var_y = yy - mu_y * mu_y
  cov = xy - mu_x * mu_y
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
  cs = (2 * cov + c2) / (var_x + var_y + c2)
  return jnp.mean(luminance * cs, axis=(1, 2)), jnp.mean(cs, axis=(1, 2))


def ssim(x: jax.Array, y: jax.Array, *, max_val: float = 1.0, filter_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Mean SSIM per image `(N,)` (Wang et al. 2004), channels averaged."""
  _check_pair(x, y)
  s, _ = _ssim_terms(x.astype(jnp.float32), y.astype(jnp.float32), max_val=max_val,
                     filter_size=filter_size, sigma=sigma, k1=k1, k2=k2)
  return jnp.mean(s, axis=-1)


def _downsample(x: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, as pytorch-msssim's `avg_pool2d(kernel_size=2, padding=s % 2)`.

  An odd side gets one zero row (column) in front, counted in the mean
  (`count_include_pad`): [N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C].
  """
  x = jnp.pad(x, ((0, 0), (x.shape[1] % 2, 0), (x.shape[2] % 2, 0), (0, 0)))
  h, w = x.shape[1], x.shape[2]
  return x.reshape(x.shape[0], h // 2, 2, w // 2, 2, x.shape[-1]).mean(axis=(2, 4))


def ms_ssim_scales(height: int, width: int, *, filter_size: int = 11) -> int:
  """The most MS-SSIM scales an image of `height` x `width` allows (0: none).

  Scale `s` (1-based) is `ceil(side / 2**(s - 1))` pixels a side and must hold
  the `filter_size` window: 5 scales need a short side above 160 (pytorch-msssim's
  rule), 32x32 images allow 2.
  """
  side, scales = min(height, width), 0
  while side >= filter_size:
    scales += 1
    side = -(-side // 2)
  return scales


def ms_ssim(x: jax.Array, y: jax.Array, *, max_val: float = 1.0,
            weights: tuple[float, ...] = MS_SSIM_WEIGHTS, scales: int | None = None,
            filter_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
            k2: float = 0.03) -> jax.Array:
  """Multi-scale SSIM per image `(N,)` (Wang, Simoncelli, Bovik 2003, Eq. 7).

  Matches pytorch-msssim 1.0 `ms_ssim(..., size_average=False)` (checked against
  its values in tests/data/ms_ssim_reference.npz); `tf.image.ssim_multiscale`
  pads odd sides symmetrically instead and agrees only on even pyramids.

  Args:
    x, y: [N, H, W, C] floats in `[0, max_val]`.
    max_val: the dynamic range (1.0 or 255.0).
    weights: the per-scale exponents, finest first.
    scales: None: `len(weights)` scales with `weights` as given; an image whose
      size does not allow that many (`ms_ssim_scales`) is an error, never a
      silently different metric. An int in `1..len(weights)`: that many scales,
      with the first `scales` weights renormalised to sum to 1 when truncated
      (`scales=1` is SSIM clipped at 0; 32x32 images allow `scales=2`).
    filter_size, sigma, k1, k2: the SSIM window and constants.

  Returns:
    [N] float32 in [0, 1].
  """
  _check_pair(x, y)
  if scales is None:
    scales, w = len(weights), np.asarray(weights, np.float64)
  elif isinstance(scales, int) and 1 <= scales <= len(weights):
    w = np.asarray(weights[:scales], np.float64)
    w = w if scales == len(weights) else w / w.sum()
  else:
    raise ValueError(f"scales must be None or an int in 1..{len(weights)}, got {scales!r}")
  allowed = ms_ssim_scales(x.shape[1], x.shape[2], filter_size=filter_size)
  if scales > allowed:
    raise ValueError(f"MS-SSIM with {scales} scales needs a short side above "
                     f"{(filter_size - 1) * 2 ** (scales - 1)} pixels, got {x.shape[1]}x"
                     f"{x.shape[2]} (this size allows scales={allowed})")
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  kw = dict(max_val=max_val, filter_size=filter_size, sigma=sigma, k1=k1, k2=k2)
  terms = []
  for level in range(scales):
    s, cs = _ssim_terms(x, y, **kw)
    terms.append(s if level == scales - 1 else cs)
    if level < scales - 1:
      x, y = _downsample(x), _downsample(y)
  stacked = jax.nn.relu(jnp.stack(terms, axis=0))          # (scales, N, C)
  return jnp.mean(jnp.prod(stacked ** jnp.asarray(w, jnp.float32)[:, None, None], axis=0),
                  axis=-1)


def psnr_s(x: jax.Array, y: jax.Array, mask: jax.Array, *, max_val: float = 1.0) -> jax.Array:
  """PSNR over a region only, per image `(N,)` in dB: the thesis's PSNR-S (Sec. 2.5).

  `10 log10(max_val^2 / MSE_w)` with `MSE_w = sum_p w_p |x_p - y_p|^2 / (C sum_p w_p)`:
  a boolean mask (the salient region, e.g. `saliency >= threshold`) averages over
  its pixels; float weights give a weighted MSE. An empty region gives NaN (0/0),
  identical images inf.

  Args:
    x, y: [N, H, W, C] floats in `[0, max_val]`.
    mask: [N, H, W] (or [N, H, W, 1]) bool, or float weights >= 0.
    max_val: the dynamic range.

  Returns:
    [N] float32.
  """
  _check_pair(x, y)
  mask = jnp.asarray(mask)
  if mask.ndim == 4 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  if mask.shape != x.shape[:3]:
    raise ValueError(f"mask must be [N, H, W] = {x.shape[:3]}, got {mask.shape}")
  w = mask.astype(jnp.float32)[..., None]
  se = jnp.sum(w * jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(1, 2, 3))
  return 10.0 * jnp.log10(max_val ** 2 * x.shape[-1] * jnp.sum(w, axis=(1, 2, 3)) / se)


def luma_420(images: jax.Array, *, max_val: float = 1.0) -> jax.Array:
  """The luma plane of ffmpeg's `-pix_fmt yuv420p`, cropped to a multiple of 16 (Table 2.1).

  BT.601 *studio* range, `Y = round(16 + 219 (.299 R + .587 G + .114 B) / max_val)`
  on the 8-bit grid, rescaled to `[0, max_val]` (so `Y / max_val` lies in
  [16/255, 235/255]). This is what VQMT measured for the MS-ROI thesis: its scripts
  convert each PNG/JPEG with ffmpeg to yuv420p (swscale's default BT.601 limited
  range, not JFIF's full range) and score the Y plane. With it, Pillow JPEG q50 on
  Kodak averages 34.71 dB luma PSNR against Table 2.1's 34.70 (full-range JFIF Y:
  33.42 dB, RGB: 32.17 dB); libswscale 9.5 (PyAV 18.1) gives the same plane on
  99.5 % of kodim05's pixels and 1 more on the rest (0.001 dB PSNR at most on
  Kodak q50). 4:2:0 leaves luma at full resolution; the crop keeps the top-left
  `16 floor(H/16) x 16 floor(W/16)` pixels (the author's script rescales to that
  size with ffmpeg `-s` instead: identical on Kodak, whose sides are multiples of 16).
  Rounding makes it an evaluation transform (zero gradient), not a loss.

  Args:
    images: [N, H, W, 3] RGB floats in `[0, max_val]`, H, W >= 16.
    max_val: the dynamic range (1.0 or 255.0).

  Returns:
    [N, 16 floor(H/16), 16 floor(W/16), 1] float32 in `[16/255, 235/255] * max_val`.
  """
  if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3]) < 16:
    raise ValueError(f"luma_420 expects [N, H, W, 3] RGB with H, W >= 16, got {images.shape}")
  h, w = images.shape[1] // 16 * 16, images.shape[2] // 16 * 16
  rgb = images[:, :h, :w].astype(jnp.float32)
  y = jnp.tensordot(rgb, jnp.asarray(RGB_TO_YCBCR[0], jnp.float32), axes=([-1], [0]),
                    precision=jax.lax.Precision.HIGHEST)
  return (jnp.round(16.0 + 219.0 * y / max_val) * (max_val / 255.0))[..., None]


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
  """Bjøntegaard delta rate (VCEG-M33, 2001): mean bit-rate change of `test` vs `ref`, in %.

  Fits log(rate) as a polynomial of PSNR (cubic, or of degree n - 1 for n < 4
  points) for each curve and averages the difference of their integrals over
  the overlapping PSNR interval. Negative: `test` needs fewer bits at equal PSNR.

  Args:
    rate_ref, psnr_ref: the reference curve (e.g. JPEG), >= 2 points, rates > 0.
    rate_test, psnr_test: the tested curve, >= 2 points.

  Raises:
    ValueError: too few points, non-positive rates, or no PSNR overlap.
  """
  curves = []
  for rate, psnr in ((rate_ref, psnr_ref), (rate_test, psnr_test)):
    rate, psnr = np.asarray(rate, np.float64), np.asarray(psnr, np.float64)
    if rate.shape != psnr.shape or rate.size < 2 or np.any(rate <= 0):
      raise ValueError("bd_rate needs >= 2 points per curve with positive rates")
    curves.append((psnr, np.polyfit(psnr, np.log(rate), min(3, rate.size - 1))))
  lo = max(c[0].min() for c in curves)
  hi = min(c[0].max() for c in curves)
  if lo >= hi:
    raise ValueError(f"the curves do not overlap in PSNR ({lo:.2f} >= {hi:.2f} dB)")
  avg = [np.diff(np.polyval(np.polyint(p), [lo, hi]))[0] / (hi - lo) for _, p in curves]
  return float((np.exp(avg[1] - avg[0]) - 1.0) * 100.0)
