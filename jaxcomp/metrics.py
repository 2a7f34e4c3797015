"""Image-quality and rate metrics: PSNR, SSIM, MS-SSIM, bits per pixel.

SSIM (Wang et al. 2004, Eq. 13) with an 11x11 Gaussian window (sigma 1.5),
K1 = 0.01, K2 = 0.03, statistics over the *valid* window positions (as
`tf.image.ssim` and skimage's `structural_similarity(gaussian_weights=True,
use_sample_covariance=False)`, which crops the border). MS-SSIM (Wang,
Simoncelli, Bovik 2003, Eq. 7): contrast-structure terms at scales 1..4 and the
full SSIM at scale 5, 2x2 average pooling between scales, exponents
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333); negative terms are clipped at 0
before the power, as `tf.image.ssim_multiscale` and pytorch_msssim do. All
are computed per channel and averaged over channels. Inputs are NHWC floats
with values in `[0, max_val]`; results are per image, shape `(N,)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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
  """Separable depthwise correlation with `window` over H and W, VALID positions only."""
  c = x.shape[-1]
  dn = ("NHWC", "HWIO", "NHWC")
  kh = jnp.tile(window[:, None, None, None], (1, 1, 1, c))
  kw = jnp.tile(window[None, :, None, None], (1, 1, 1, c))
  prec = jax.lax.Precision.HIGHEST
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=c, precision=prec)
  return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=c, precision=prec)


def _ssim_terms(x, y, *, max_val, filter_size, sigma, k1, k2):
  """Per-image, per-channel mean SSIM and mean contrast-structure, each `(N, C)`."""
  if min(x.shape[1:3]) < filter_size:
    raise ValueError(f"images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                     f"{filter_size}x{filter_size} SSIM window")
  w = _gaussian_window(filter_size, sigma)
  mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
  var_x = _filter_valid(x * x, w) - mu_x * mu_x
  var_y = _filter_valid(y * y, w) - mu_y * mu_y
  cov = _filter_valid(x * y, w) - mu_x * mu_y
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
  """2x2 average pooling, stride 2, odd rows/columns dropped (VALID)."""
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  x = x[:, :h, :w]
  return x.reshape(x.shape[0], h // 2, 2, w // 2, 2, x.shape[-1]).mean(axis=(2, 4))


def ms_ssim(x: jax.Array, y: jax.Array, *, max_val: float = 1.0,
            weights: tuple[float, ...] = MS_SSIM_WEIGHTS, filter_size: int = 11,
            sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Multi-scale SSIM per image `(N,)` (Wang, Simoncelli, Bovik 2003, Eq. 7).

  Needs images of at least `filter_size * 2**(len(weights) - 1)` pixels on a
  side (176 for the defaults).
  """
  _check_pair(x, y)
  levels = len(weights)
  if min(x.shape[1:3]) < filter_size * 2 ** (levels - 1):
    raise ValueError(f"MS-SSIM with {levels} scales needs images of at least "
                     f"{filter_size * 2 ** (levels - 1)} pixels a side, got "
                     f"{x.shape[1]}x{x.shape[2]}")
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  kw = dict(max_val=max_val, filter_size=filter_size, sigma=sigma, k1=k1, k2=k2)
  terms = []
  for level in range(levels):
    s, cs = _ssim_terms(x, y, **kw)
    terms.append(s if level == levels - 1 else cs)
    if level < levels - 1:
      x, y = _downsample(x), _downsample(y)
  stacked = jax.nn.relu(jnp.stack(terms, axis=0))          # (levels, N, C)
  w = jnp.asarray(weights, jnp.float32)[:, None, None]
  return jnp.mean(jnp.prod(stacked ** w, axis=0), axis=-1)


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
