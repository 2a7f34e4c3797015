"""Semantic JPEG as a defense: MS-ROI and Aug-MSROI quantization (thesis papers/001, Ch. 3.5-3.6).

`T(x)`: JPEG-compress-decompress the batch at each quality of `levels` with
the pure-JAX JPEG (`jpeg_defense`: hard rounding, 4:2:0 by default), then give
each 8x8 block the pixels of the version whose level its saliency selects
(`jaxcomp.msroi.variable_jpeg.block_levels` / `select_blocks`: Sec. 2.4,
Algorithm 1 lines 1-5), so that salient blocks keep high quality and the
rest -- where an adversary's perturbation also lies -- is quantized hard.
The saliency is the Aug-MSROI map (MS-ROI maps averaged over random input
and activation perturbations, Sec. 3.6) or, with `aug=False`, the plain
MS-ROI map (Eq. 2.5); both come from the shipped MS-ROI network unless
`variables` or `map_fn` say otherwise. The map is computed under
`stop_gradient` (the MS-ROI network is not the attacked model; adaptive
attacks go through `jaxcomp.attacks.bpda`). Algorithm 1's last line
(re-encode the mosaic at Q_f) is `final_quality`; None (default) returns the
mosaic itself, the transform the classifier sees up to that final encode.

Table 3.1 (ResNet-50, 300 ImageNet images, attacks at RMSE 0.02, 5
perturbations; accuracy / MSE / SSIM / PSNR): JPEG 52 / 16.55 / .62 / 24.33,
MS-ROI 65 / 16.13 / .64 / 24.61, Aug-MSROI 82 / 10.92 / .86 / 27.36.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxcomp.defenses.jpeg import jpeg_defense
from jaxcomp.ops.jpeg_tables import check_quality

MapFn = Callable[[jax.Array, jax.Array | None], jax.Array]


def semantic_jpeg_defense(images: jax.Array, key: jax.Array | None = None, *,
                          map_fn: MapFn | None = None, aug: bool = True,
                          levels: Sequence[int] = (30, 40, 50, 60, 70),
                          num_perturbations: int = 5, input_noise: float = 0.02,
                          jitter: int = 8, activation_noise: float = 0.1,
                          dropout_rate: float = 0.0, method: str = "top5",
                          short_side: int | None = None, variables: Any = None,
                          pooling: str = "mean",
                          final_quality: int | None = None,
                          subsampling: str = "4:2:0") -> jax.Array:
  """Variable-quality JPEG of a batch guided by its (Aug-)MS-ROI map.

  Args:
    images: [B, H, W, 3] float RGB in [0, 1].
    key: PRNG key of Aug-MSROI's perturbations (unused with `aug=False` and
      by a deterministic `map_fn`).
    map_fn: `map_fn(images, key) -> [B, H, W]` saliency in [0, 1], replacing
      the MS-ROI network (e.g. a constant map, or R-CAM of the defended model).
    aug: Aug-MSROI (True) or plain MS-ROI (False) when `map_fn` is None.
    levels: JPEG qualities, the lowest saliency level first; k = len(levels)
      levels (Sec. 2.5: 30, 40, 50, 60, 70).
    num_perturbations, input_noise, jitter, activation_noise, dropout_rate:
      Aug-MSROI's perturbations (`jaxcomp.msroi.maps.aug_msroi_map`).
    method: map combination, "top5" | "threshold" | "code" (`saliency_map`).
    short_side: the network's input short side (`saliency_map`; None: full size).
    variables: MS-ROI network variables; None: the shipped weights.
    pooling: a block's saliency, "mean" or "max" over its pixels (`block_levels`).
    final_quality: Q_f of Algorithm 1's final encode, or None for none.
    subsampling: chroma subsampling of every JPEG, "4:2:0" or "4:4:4".

  Returns:
    [B, H, W, 3] float32 images in [0, 1].
  """
  from jaxcomp.msroi import maps, variable_jpeg  # noqa: PLC0415 (msroi imports the models)
  levels = tuple(check_quality(q) for q in levels)
  if not levels:
    raise ValueError("levels must hold at least one JPEG quality")
  if map_fn is None:
    if aug:
      if key is None:
        raise ValueError("Aug-MSROI needs a PRNG key (or use aug=False)")
      map_fn = lambda x, k: maps.aug_msroi_map(  # noqa: E731
          x, k, variables=variables, num_perturbations=num_perturbations,
          input_noise=input_noise, jitter=jitter, activation_noise=activation_noise,
          dropout_rate=dropout_rate, method=method, short_side=short_side)
    else:
      map_fn = lambda x, k: maps.saliency_map(  # noqa: E731
          x, variables=variables, method=method, short_side=short_side)
  saliency = jax.lax.stop_gradient(map_fn(images, key))
  if saliency.shape != images.shape[:3]:
    raise ValueError(f"map_fn returned shape {saliency.shape}, expected {images.shape[:3]}")
  decoded = jnp.stack([jpeg_defense(images, quality=q, subsampling=subsampling)
                       for q in levels])                                   # [k, B, H, W, 3]
  index = variable_jpeg.block_levels(saliency, levels, pooling=pooling)
  out = variable_jpeg.select_blocks(decoded, index)
  if final_quality is not None:
    out = jpeg_defense(out, quality=final_quality, subsampling=subsampling)
  return out
