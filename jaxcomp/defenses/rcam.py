"""Robust class activation maps (R-CAM, Eq. 4.4-4.5 of the thesis, papers/001 Ch. 4.6.1).

For a classifier whose head is a dense layer on globally pooled features
(every zoo model: `aux["features"]` [B, h, w, D] and the layer "head" with a
kernel [D, K]), the class activation map of class c is (Eq. 4.4)

  `M_c(x, y) = sum_d W[d, c] f_d(x, y)`,

and R-CAM combines the top-k classes by predicted logit (Eq. 4.5),

  `M(x, y) = sum_{i=1..k} M_{c_i}(x, y) / 2^i`   (k = 5),

which is then made non-negative (ReLU, as class activation maps are shown),
upsampled bilinearly to the image size and divided by its max, so that it
lies in [0, 1] (all zero where the map has no positive value).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp


def robust_cam(features: jax.Array, head_kernel: jax.Array, logits: jax.Array, *,
               image_size: tuple[int, int], top_k: int = 5) -> jax.Array:
  """R-CAM from the last feature map and the head's kernel (Eq. 4.4-4.5).

  Args:
    features: [B, h, w, D] the feature map the head pools.
    head_kernel: [D, K] the dense head's kernel.
    logits: [B, K] the classifier's logits (they rank the classes).
    image_size: (H, W) of the output map.
    top_k: number of classes combined (5 in the thesis).

  Returns:
    [B, H, W] float32 map in [0, 1].
  """
  chex.assert_rank([features, head_kernel, logits], [4, 2, 2])
  if features.shape[-1] != head_kernel.shape[0] or logits.shape[-1] != head_kernel.shape[1]:
    raise ValueError(f"features {features.shape}, head kernel {head_kernel.shape} and logits "
                     f"{logits.shape} do not fit together")
  if not 1 <= top_k <= logits.shape[-1]:
    raise ValueError(f"top_k must be in [1, {logits.shape[-1]}], got {top_k}")
  top = jax.lax.top_k(logits, top_k)[1]  # [B, k]
  weights = 0.5 ** jnp.arange(1, top_k + 1, dtype=jnp.float32)
  kernel = jnp.take(head_kernel.astype(jnp.float32), top, axis=1)  # [D, B, k]
  combined = jnp.einsum("dbk,k->bd", kernel, weights)
  m = jax.nn.relu(jnp.einsum("bhwd,bd->bhw", features.astype(jnp.float32), combined))
  m = jax.image.resize(m, (m.shape[0], *image_size), method="bilinear")
  m = jnp.maximum(m, 0.0)
  peak = jnp.max(m, axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, m / jnp.where(peak > 0, peak, 1.0), 0.0)


def find_head_kernel(variables: Any) -> jax.Array:
  """The kernel of the (unique) dense layer named "head" in a Flax variables tree."""
  hits = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]
          if [getattr(k, "key", None) for k in path[-2:]] == ["head", "kernel"]]
  if len(hits) != 1:
    raise ValueError(f"expected exactly one 'head/kernel' parameter, found {len(hits)}")
  return hits[0]


def rcam_from_model(apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, dict]],
                    variables: Any, images: jax.Array, *, top_k: int = 5) -> jax.Array:
  """R-CAM of `images` [B, H, W, C] for a zoo classifier.

  Args:
    apply_fn: `apply_fn(variables, images) -> (logits, aux)` with `aux["features"]`.
    variables: the model's variables (its "head" kernel is looked up by name).
    images: [B, H, W, C] model inputs.
    top_k: classes combined.

  Returns:
    [B, H, W] map in [0, 1].
  """
  logits, aux = apply_fn(variables, images)
  return robust_cam(aux["features"], find_head_kernel(variables), logits,
                    image_size=images.shape[1:3], top_k=top_k)
