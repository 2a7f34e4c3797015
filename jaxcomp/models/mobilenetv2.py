"""MobileNetV2 for 32x32 images, as CRD builds it (the `mobilenetv2` of JPEG-DL).

HobbitLong/RepDistiller `models/mobilenetv2.py`, `mobile_half`: expansion
T = 6, width multiplier 0.5 (channels int(c * 0.5) of Sandler et al.'s
16/24/32/64/96/160/320, stem int(32 * 0.5) = 16 with stride 2), a final 1x1
conv to 1280 channels, global average pooling and Linear. Unlike torchvision,
every inverted residual (also t = 1) starts with the 1x1 expansion conv.
A 32x32 input ends at 2x2.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS

# (expansion t or None for the model's T, channels c, repeats n, first stride s):
# Sandler et al. 2018, Table 2, with CRD's strides for 32x32 inputs.
SETTINGS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
             (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))


class InvertedResidual(nn.Module):
  """1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ x when shapes match)."""
  features: int
  strides: int
  expand_ratio: int
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(train=train, dtype=self.dtype)
    hidden = x.shape[-1] * self.expand_ratio
    y = common.conv_bn(x, hidden, 1, name="expand_conv", **kw)
    y = common.conv_bn(y, hidden, 3, strides=self.strides, groups=hidden, name="dw_conv", **kw)
    y = common.conv_bn(y, self.features, 1, relu=False, name="project_conv", **kw)
    if self.strides == 1 and x.shape[-1] == self.features:
      y = x + y
    return y


@MODELS.register("mobilenetv2")
class MobileNetV2(nn.Module):
  """MobileNetV2.

  Attributes:
    num_classes: K, the width of the head.
    dtype: compute dtype (parameters stay float32).
    expansion: T, the expansion of the inverted residuals whose t is None.
    width: channel multiplier (0.5 for CRD's `mobile_half`).
    settings: (t, c, n, s) rows, see `SETTINGS`.
  """
  num_classes: int
  dtype: common.Dtype = jnp.float32
  expansion: int = 6
  width: float = 0.5
  settings: Sequence[tuple[int | None, int, int, int]] = SETTINGS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: [B, H, W, C] normalised float -> (logits [B, K] float32, aux)."""
    common.check_inputs(x, self.num_classes)
    kw = dict(train=train, dtype=self.dtype)
    x = x.astype(self.dtype)
    x = common.conv_bn(x, int(32 * self.width), 3, strides=2, name="stem_conv", **kw)
    for i, (t, c, n, s) in enumerate(self.settings):
      for j in range(n):
        x = InvertedResidual(int(c * self.width), s if j == 0 else 1,
                             self.expansion if t is None else t, dtype=self.dtype,
                             name=f"stage{i + 1}_block{j + 1}")(x, train)
    last = int(1280 * self.width) if self.width > 1.0 else 1280
    x = common.conv_bn(x, last, 1, name="last_conv", **kw)
    return common.classify(x, common.global_avg_pool(x), num_classes=self.num_classes,
                           dtype=self.dtype)
