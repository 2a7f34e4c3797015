"""The thesis's defense: targeted pixel deflection, then wavelet denoising (Ch. 4.8).

`pd_rcam_dwt` = `pixel_deflection` (guided by an R-CAM map when one is given)
followed by `denoise_wavelet` in YCbCr with BayesShrink soft thresholding, and
a final clip to [0, 1] so that the classifier sees valid images. Defaults are
Table 4.1's: sigma = 0.04, window = 10, deflections = 100, db1.

Every stage treats images independently, so the batch is processed a chunk of
whole images at a time (`ops.chunking`, about `CHUNK_BYTES` of float32 pixels per
chunk): the ~20 passes of the wavelet transform, thresholding and colour
conversions then stay in cache (1.7x faster at 64x224x224 on 2 CPU cores,
docs/performance.md). The deflections' uniforms are drawn for the whole batch
first, so the result does not depend on the chunk size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcomp.defenses.pixel_deflection import check_arguments, deflect, draw
from jaxcomp.defenses.wavelet import denoise_wavelet
from jaxcomp.ops import chunking

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
  b, h, w, c = images.shape
  u = draw(key, b, int(deflections)) if deflections else None

  def defend(x, u_chunk, rcam_chunk):
    if u_chunk is not None:
      x = deflect(x, jnp.moveaxis(u_chunk, 0, 1), rcam_chunk, window=int(window))
    x = denoise_wavelet(x, sigma=sigma, wavelet=wavelet, mode=mode,
                        wavelet_levels=wavelet_levels, convert2ycbcr=convert2ycbcr,
                        method=method, rescale_sigma=rescale_sigma)
    return jnp.clip(x, 0.0, 1.0)

  chunk = chunking.images_per_chunk(b, h * w * c * 4, chunk_bytes)
  return chunking.map_chunks(defend, chunk, images,
                             None if u is None else jnp.moveaxis(u, 1, 0), rcam)
