"""The thesis's defense: targeted pixel deflection, then wavelet denoising (Ch. 4.8).

`pd_rcam_dwt` = `pixel_deflection` (guided by an R-CAM map when one is given)
followed by `denoise_wavelet` in YCbCr with BayesShrink soft thresholding, and
a final clip to [0, 1] so that the classifier sees valid images. Defaults are
Table 4.1's: sigma = 0.04, window = 10, deflections = 100, db1.

On one CPU device (float32, the Haar wavelet, a given sigma) the whole defense
after the draws is one C++ kernel, one image at a time in cache
(`ops.haar_shrink`, docs/performance.md). Elsewhere every stage treats images
independently, so the batch is processed a chunk of whole images at a time
(`ops.chunking`, about `CHUNK_BYTES` of float32 pixels per chunk): the ~20 passes
of the wavelet transform, thresholding and colour conversions then stay in cache.
The deflections' uniforms are drawn for the whole batch first, so the result does
not depend on the chunk size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcomp.defenses.pixel_deflection import check_arguments, draw, moves
from jaxcomp.defenses.wavelet import denoise_moved

# Pixels (float32 bytes) per chunk of images: 4 images at 224x224 (measured best
# of 1, 2, 4, 8 there).
CHUNK_BYTES = 4 * 2 ** 20


def pd_rcam_dwt(images: jax.Array, key: jax.Array, *, rcam: jax.Array | None = None,
                deflections: int = 100, window: int = 10, sigma: float | None = 0.04,
                wavelet: str = "db1", mode: str = "soft", method: str = "BayesShrink",
                wavelet_levels: int | None = None, convert2ycbcr: bool = True,
                rescale_sigma: bool = True, chunk_bytes: int = CHUNK_BYTES) -> jax.Array:
  """PD (+ R-CAM) + DWT denoising of a batch.

  Args:
    images: [B, H, W, 3] float RGB in [0, 1].
    key: PRNG key for the deflections.
    rcam: optional [B, H, W] R-CAM map in [0, 1] (`rcam.robust_cam`); None = untargeted.
    deflections, window: `pixel_deflection`'s K and r.
    sigma, wavelet, mode, method, wavelet_levels, convert2ycbcr, rescale_sigma:
      `denoise_wavelet`'s arguments.
    chunk_bytes: images are processed in chunks of about this many float32 bytes
      (speed only; the result does not depend on it).

  Returns:
    [B, H, W, 3] defended images in [0, 1].
  """
  check_arguments(images, deflections, window, rcam)
  b, h, w, _ = images.shape
  if deflections:
    dest, src = moves(draw(key, b, int(deflections)), rcam, height=h, width=w, window=int(window))
  else:
    dest = src = jnp.zeros((b, 0), jnp.int32)
  return denoise_moved(images, dest, src, sigma=sigma, wavelet=wavelet, mode=mode,
                       wavelet_levels=wavelet_levels, convert2ycbcr=convert2ycbcr, method=method,
                       rescale_sigma=rescale_sigma, clip=True, chunk_bytes=chunk_bytes)
