"""JPEG compression as a defense (Das et al. 2017; Ch. 3 of the thesis): decode(encode(x)).

The standard (hard-rounding) JPEG of `jaxcomp.codecs.jpeg` at one quality;
deterministic, so the key of the defense signature is ignored. It is not
differentiable in a useful way (rounding), so adaptive attacks go through
`jaxcomp.attacks.bpda` (identity backward, or the soft-rounding JPEG as the
surrogate).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def jpeg_defense(images: jax.Array, key: jax.Array | None = None, *, quality: int = 75,
                 subsampling: str = "4:2:0") -> jax.Array:
  """JPEG round trip of a batch.

  Args:
    images: [B, H, W, 3] float RGB in [0, 1].
    key: unused (the defense signature `(images, key) -> images`).
    quality: libjpeg quality in [1, 100].
    subsampling: chroma subsampling, "4:2:0" or "4:4:4".

  Returns:
    [B, H, W, 3] decoded images in [0, 1].
  """
  del key
  from jaxcomp.codecs.jpeg import jpeg  # noqa: PLC0415 (codecs sit above defenses' other deps)
  return jnp.clip(jpeg(images, quality=quality, quantizer="hard", subsampling=subsampling),
                  0.0, 1.0)
