"""An image classifier as researchers use it: [0, 1] images in, logits out.

`ImageClassifier` = optional JPEG-DL layer -> per-channel normalisation ->
a zoo backbone. Attacks, defenses and the trainer all call it on images in
[0, 1], so no caller has to remember the dataset's mean and std.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ImageClassifier(nn.Module):
  """`backbone(((jpeg_layer(x) if jpeg_layer else x) - mean) / std)`.

  Attributes:
    backbone: a zoo model (`jaxcomp.models.MODELS`) returning `(logits, aux)`.
    mean: per-channel mean of images in [0, 1].
    std: per-channel standard deviation of images in [0, 1].
    jpeg_layer: optional module mapping [0, 1]-scaled images to images of the
      same scale (the JPEG-DL layer; its output is not clamped).
  """
  backbone: nn.Module
  mean: Sequence[float]
  std: Sequence[float]
  jpeg_layer: nn.Module | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    """x: [B, H, W, C] float in [0, 1] -> (logits [B, K] float32, aux dict)."""
    if x.ndim != 4 or x.shape[-1] != len(self.mean):
      raise ValueError(f"expected images [B, H, W, {len(self.mean)}], got shape {x.shape}")
    if self.jpeg_layer is not None:
      x = self.jpeg_layer(x)
    mean = jnp.asarray(self.mean, jnp.float32)
    std = jnp.asarray(self.std, jnp.float32)
    return self.backbone((x - mean) / std, train=train)
