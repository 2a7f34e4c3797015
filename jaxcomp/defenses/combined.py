"""The thesis's defense: targeted pixel deflection, then wavelet denoising (Ch. 4.8).

`pd_rcam_dwt` = `pixel_deflection` (guided by an R-CAM map when one is given)
followed by `denoise_wavelet` in YCbCr with BayesShrink soft thresholding, and
a final clip to [0, 1] so that the classifier sees valid images. Defaults are
Table 4.1's: sigma = 0.04, window = 10, deflections = 100, db1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcomp.defenses.pixel_deflection import pixel_deflection
from jaxcomp.defenses.wavelet import denoise_wavelet


def pd_rcam_dwt(images: jax.Array, key: jax.Array, *, rcam: jax.Array | None = None,
                deflections: int = 100, window: int = 10, sigma: float | None = 0.04,
                wavelet: str = "db1", mode: str = "soft", method: str = "BayesShrink",
                wavelet_levels: int | None = None, convert2ycbcr: bool = True,
                rescale_sigma: bool = True) -> jax.Array:
  """PD (+ R-CAM) + DWT denoising of a batch.

  Args:
    images: [B, H, W, 3] float RGB in [0, 1].
    key: PRNG key for the deflections.
    rcam: optional [B, H, W] R-CAM map in [0, 1] (`rcam.robust_cam`); None = untargeted.
    deflections, window: `pixel_deflection`'s K and r.
    sigma, wavelet, mode, method, wavelet_levels, convert2ycbcr, rescale_sigma:
      `denoise_wavelet`'s arguments.

  Returns:
    [B, H, W, 3] defended images in [0, 1].
  """
  x = pixel_deflection(images, key, deflections=deflections, window=window, rcam=rcam)
  x = denoise_wavelet(x, sigma=sigma, wavelet=wavelet, mode=mode, wavelet_levels=wavelet_levels,
                      convert2ycbcr=convert2ycbcr, method=method, rescale_sigma=rescale_sigma)
  return jnp.clip(x, 0.0, 1.0)
