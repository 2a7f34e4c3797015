"""ShuffleNetV2 (1x) for 32x32 images, as CRD builds it (JPEG-DL's `shufflenetv2`).

HobbitLong/RepDistiller `models/ShuffleNetv2.py`, `ShuffleV2` (Ma et al. 2018
units): a 1x1 stem to 24 channels with stride 1 and no max-pool, three stages
(116, 232, 464 channels) each made of one downsampling unit and 3 / 7 / 3 basic
units, a 1x1 conv to 1024, global average pooling and Linear. A 32x32 input
ends at 4x4.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS


def channel_shuffle(x: jax.Array, groups: int = 2) -> jax.Array:
  """[B, H, W, C]: output channel `c * groups + g` is input channel `g * C/groups + c`."""
  b, h, w, c = x.shape
  return x.reshape(b, h, w, groups, c // groups).swapaxes(3, 4).reshape(b, h, w, c)


class ShuffleUnit(nn.Module):
  """Basic unit: keep half the channels, transform the other half, concat, shuffle."""
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(train=train, dtype=self.dtype)
    c = x.shape[-1] // 2
    keep, y = x[..., :c], x[..., c:]
    y = common.conv_bn(y, c, 1, name="conv1", **kw)
    y = common.conv_bn(y, c, 3, groups=c, relu=False, name="dw_conv", **kw)
    y = common.conv_bn(y, c, 1, name="conv2", **kw)
    return channel_shuffle(jnp.concatenate([keep, y], axis=-1))


class DownUnit(nn.Module):
  """Downsampling unit: two stride-2 branches of `features // 2` channels each."""
  features: int
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(train=train, dtype=self.dtype)
    mid = self.features // 2
    cin = x.shape[-1]
    left = common.conv_bn(x, cin, 3, strides=2, groups=cin, relu=False, name="left_dw_conv",
                          **kw)
    left = common.conv_bn(left, mid, 1, name="left_conv", **kw)
    right = common.conv_bn(x, mid, 1, name="right_conv1", **kw)
    right = common.conv_bn(right, mid, 3, strides=2, groups=mid, relu=False,
                           name="right_dw_conv", **kw)
    right = common.conv_bn(right, mid, 1, name="right_conv2", **kw)
    return channel_shuffle(jnp.concatenate([left, right], axis=-1))


@MODELS.register("shufflenetv2")
class ShuffleNetV2(nn.Module):
  """Attributes: num_classes; dtype; stage widths and basic units per stage; last width."""
  num_classes: int
  dtype: common.Dtype = jnp.float32
  widths: Sequence[int] = (116, 232, 464)
  num_units: Sequence[int] = (3, 7, 3)
  last_width: int = 1024

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: [B, H, W, C] normalised float -> (logits [B, K] float32, aux)."""
    common.check_inputs(x, self.num_classes)
    kw = dict(train=train, dtype=self.dtype)
    x = x.astype(self.dtype)
    x = common.conv_bn(x, 24, 1, name="stem_conv", **kw)
    for i, (width, units) in enumerate(zip(self.widths, self.num_units)):
      x = DownUnit(width, dtype=self.dtype, name=f"stage{i + 1}_down")(x, train)
      for j in range(units):
        x = ShuffleUnit(dtype=self.dtype, name=f"stage{i + 1}_unit{j + 1}")(x, train)
    x = common.conv_bn(x, self.last_width, 1, name="last_conv", **kw)
    return common.classify(x, common.global_avg_pool(x), num_classes=self.num_classes,
                           dtype=self.dtype)
