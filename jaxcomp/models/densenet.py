"""DenseNet-BC (Huang et al. 2017): bottleneck layers and compression 0.5.

Each dense layer computes `conv3x3(k)(relu(bn(conv1x1(4k)(relu(bn(x))))))` and
is concatenated to its input; transitions between blocks are
`avgpool2(conv1x1(floor(0.5 C))(relu(bn(x))))`; after the last block
`relu(bn(x))` is pooled globally and fed to the head.

Registered:
  * densenet_bc_100: L = 100, k = 12 for 32x32 images (Huang et al. Sec. 4:
    three blocks of (100 - 4) / 6 = 16 layers, a 3x3 stem conv of 2k channels).
  * densenet121: torchvision's (k = 32, blocks 6/12/24/16, a 7x7/2 stem conv of
    64 channels with BN, ReLU and a 3x3/2 max-pool); 7,978,856 parameters for
    1000 classes.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS


class DenseLayer(nn.Module):
  """BN-ReLU-conv1x1(bn_size * k)-BN-ReLU-conv3x3(k): the k new channels."""
  growth_rate: int
  bn_size: int = 4
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = nn.relu(common.batch_norm(train=train, dtype=self.dtype, name="pre_bn")(x))
    y = common.conv_bn(y, self.bn_size * self.growth_rate, 1, train=train, dtype=self.dtype,
                       name="conv1")
    return common.conv(self.growth_rate, 3, dtype=self.dtype, name="conv2")(y)


class DenseNet(nn.Module):
  """DenseNet-BC.

  Attributes:
    num_classes: K, the width of the head.
    dtype: compute dtype (parameters stay float32).
    growth_rate: k, channels each dense layer adds.
    block_config: dense layers per block.
    num_init_features: channels of the stem convolution.
    bn_size: bottleneck width in multiples of k.
    compression: channel factor of the transitions (floor(compression * C)).
    stem: "cifar" (a 3x3 conv) or "imagenet" (7x7/2 conv, BN, ReLU, 3x3/2 max-pool).
  """
  num_classes: int
  dtype: common.Dtype = jnp.float32
  growth_rate: int = 32
  block_config: Sequence[int] = (6, 12, 24, 16)
  num_init_features: int = 64
  bn_size: int = 4
  compression: float = 0.5
  stem: str = "imagenet"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: [B, H, W, C] normalised float -> (logits [B, K] float32, aux)."""
    common.check_inputs(x, self.num_classes)
    kw = dict(dtype=self.dtype)
    x = x.astype(self.dtype)
    if self.stem == "cifar":
      x = common.conv(self.num_init_features, 3, name="stem_conv", **kw)(x)
    elif self.stem == "imagenet":
      x = common.conv_bn(x, self.num_init_features, 7, strides=2, train=train, name="stem_conv",
                         **kw)
      x = common.max_pool(x, 3, 2, padding=1)
    else:
      raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}")
    for i, layers in enumerate(self.block_config):
      for j in range(layers):
        y = DenseLayer(self.growth_rate, self.bn_size, name=f"block{i + 1}_layer{j + 1}",
                       **kw)(x, train)
        x = jnp.concatenate([x, y], axis=-1)
      if i < len(self.block_config) - 1:
        name = f"transition{i + 1}"
        x = nn.relu(common.batch_norm(train=train, name=f"{name}_pre_bn", **kw)(x))
        x = common.conv(int(x.shape[-1] * self.compression), 1, name=f"{name}_conv", **kw)(x)
        x = common.avg_pool(x, 2)
    x = nn.relu(common.batch_norm(train=train, name="final_bn", **kw)(x))
    return common.classify(x, common.global_avg_pool(x), num_classes=self.num_classes,
                           dtype=self.dtype)


MODELS.register("densenet_bc_100", functools.partial(
    DenseNet, growth_rate=12, block_config=(16, 16, 16), num_init_features=24,
    stem="cifar"))
MODELS.register("densenet121", functools.partial(
    DenseNet, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
    stem="imagenet"))
