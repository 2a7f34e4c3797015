"""ResNets: one family for the CIFAR, ImageNet, pre-activation and thesis variants.

`stem -> stages of residual blocks -> pooling -> head`, where the stem is
`conv -> BN -> ReLU` (3x3 stride 1 for small images; 7x7 stride 2 + 3x3 max-pool
for ImageNet-size ones), stage i (1-based) has `stage_sizes[i-1]` blocks of width
`widths[i-1]` and downsamples by 2 in its first block when i > 1. A shortcut
changes shape through a 1x1 projection (conv + BN; conv only in the
pre-activation block), else it is the identity.

Registered names:
  * resnet20/32/56/110: He et al. 2016 CIFAR ResNets (depth 6n+2, widths
    16/32/64) as HobbitLong/RepDistiller `models/resnet.py` builds them (the
    CRD version JPEG-DL trains): projection shortcuts ("option B").
  * resnet18/34/50: torchvision's ImageNet ResNets (v1.5: stride on the 3x3).
  * preact_resnet18: He et al. 2016b pre-activation ResNet-18 as JPEG-DL's
    repository builds it (`models/resnet.py` `CIFAR_ResNet18`, from CS-KD): a
    conv-BN-ReLU stem, pre-activation blocks, no BN after the last block. One
    difference: there the identity shortcut reads the block's activated input
    relu(bn1(x)) (an empty `nn.Sequential` applied to it); here it reads x, as
    in He et al. 2016b. Its stem follows the input ("auto"): the 3x3 CIFAR stem
    below 128 pixels, the ImageNet stem (7x7/2 + max-pool) from 128 up
    (224x224 fine-grained images).
  * thesis_res18, thesis_res18_1..4: Table 3.3 of the compressed-training
    thesis (papers/000): a 3x3 stem of 64, BasicBlocks of the listed widths,
    then 4x4 average pooling, flatten and Linear (kuangliu's CIFAR ResNet18).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS


def _shortcut(x: jax.Array, features: int, strides: int, *, train: bool,
              dtype: common.Dtype) -> jax.Array:
  """Identity, or a 1x1 projection ("proj_conv" + BN) when the shape changes."""
  if strides == 1 and x.shape[-1] == features:
    return x
  return common.conv_bn(x, features, 1, strides=strides, relu=False, train=train,
                        dtype=dtype, name="proj_conv")


class BasicBlock(nn.Module):
  """`relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, two 3x3 convs."""
  features: int
  strides: int = 1
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(train=train, dtype=self.dtype)
    y = common.conv_bn(x, self.features, 3, strides=self.strides, name="conv1", **kw)
    y = common.conv_bn(y, self.features, 3, relu=False, name="conv2", **kw)
    return nn.relu(_shortcut(x, self.features, self.strides, **kw) + y)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride here, torchvision v1.5) -> 1x1 to 4 * features."""
  features: int
  strides: int = 1
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(train=train, dtype=self.dtype)
    y = common.conv_bn(x, self.features, 1, name="conv1", **kw)
    y = common.conv_bn(y, self.features, 3, strides=self.strides, name="conv2", **kw)
    y = common.conv_bn(y, 4 * self.features, 1, relu=False, name="conv3", **kw)
    return nn.relu(_shortcut(x, 4 * self.features, self.strides, **kw) + y)


class PreActBlock(nn.Module):
  """He et al. 2016b: `conv2(relu(bn(conv1(a)))) + shortcut`, `a = relu(pre_bn(x))`.

  The projection shortcut (1x1 conv, no BN) reads `a`, the identity reads `x`.
  """
  features: int
  strides: int = 1
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype)
    a = nn.relu(common.batch_norm(train=train, name="pre_bn", **kw)(x))
    y = common.conv_bn(a, self.features, 3, strides=self.strides, train=train, name="conv1",
                       **kw)
    y = common.conv(self.features, 3, name="conv2", **kw)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = common.conv(self.features, 1, strides=self.strides, name="proj_conv", **kw)(a)
    return x + y


class ResNet(nn.Module):
  """A residual network (see the module docstring for the layout).

  Attributes:
    num_classes: K, the width of the head.
    dtype: compute dtype (parameters stay float32).
    stage_sizes: blocks per stage.
    widths: block width per stage (Bottleneck outputs 4x this).
    block: BasicBlock, Bottleneck or PreActBlock.
    stem_width: output channels of the stem convolution.
    stem: "cifar" (3x3 stride 1), "imagenet" (7x7 stride 2 + 3x3/2 max-pool) or
      "auto" ("imagenet" when the input's height is >= 128, else "cifar").
    head_pool: "global" (average over space -> [B, C]) or "avg4" (4x4 average
      pooling with stride 4, then flatten -> [B, h/4 * w/4 * C]; the thesis
      variants, which need maps of at least 4x4).
  """
  num_classes: int
  dtype: common.Dtype = jnp.float32
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  block: type[nn.Module] = BasicBlock
  stem_width: int = 16
  stem: str = "cifar"
  head_pool: str = "global"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: [B, H, W, C] normalised float -> (logits [B, K] float32, aux)."""
    common.check_inputs(x, self.num_classes)
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f"stage_sizes {self.stage_sizes} and widths {self.widths} "
                       "must have the same length")
    stem = self.stem
    if stem == "auto":
      stem = "imagenet" if x.shape[1] >= 128 else "cifar"
    if stem not in ("cifar", "imagenet"):
      raise ValueError(f"stem must be 'cifar', 'imagenet' or 'auto', got {self.stem!r}")
    x = x.astype(self.dtype)
    if stem == "cifar":
      x = common.conv_bn(x, self.stem_width, 3, train=train, dtype=self.dtype, name="stem_conv")
    else:
      x = common.conv_bn(x, self.stem_width, 7, strides=2, train=train, dtype=self.dtype,
                         name="stem_conv")
      x = common.max_pool(x, 3, 2, padding=1)
    for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(size):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(width, strides, dtype=self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
    if self.head_pool == "global":
      pre_logits = common.global_avg_pool(x)
    elif self.head_pool == "avg4":
      if min(x.shape[1:3]) < 4:
        raise ValueError(f"head_pool='avg4' needs a final map of at least 4x4, got {x.shape}")
      pre_logits = common.flatten(common.avg_pool(x, 4))
    else:
      raise ValueError(f"head_pool must be 'global' or 'avg4', got {self.head_pool!r}")
    return common.classify(x, pre_logits, num_classes=self.num_classes, dtype=self.dtype)


def _cifar_resnet(depth: int) -> functools.partial:
  """He et al. 2016 Sec. 4.2: 6n+2 layers, n BasicBlocks per stage of 16/32/64."""
  n = (depth - 2) // 6
  return functools.partial(ResNet, stage_sizes=(n, n, n), widths=(16, 32, 64),
                           block=BasicBlock, stem_width=16, stem="cifar")


for _depth in (20, 32, 56, 110):
  MODELS.register(f"resnet{_depth}", _cifar_resnet(_depth))

_IMAGENET_WIDTHS = (64, 128, 256, 512)
MODELS.register("resnet18", functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), widths=_IMAGENET_WIDTHS, block=BasicBlock,
    stem_width=64, stem="imagenet"))
MODELS.register("resnet34", functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), widths=_IMAGENET_WIDTHS, block=BasicBlock,
    stem_width=64, stem="imagenet"))
MODELS.register("resnet50", functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), widths=_IMAGENET_WIDTHS, block=Bottleneck,
    stem_width=64, stem="imagenet"))
MODELS.register("preact_resnet18", functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), widths=_IMAGENET_WIDTHS, block=PreActBlock,
    stem_width=64, stem="auto"))

# Table 3.3 of the compressed-training thesis: one BasicBlock per listed width
# (RES18 itself: two per stage).
_THESIS_RES18 = {
    "thesis_res18": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "thesis_res18_1": ((1, 1, 1, 1), (64, 128, 256, 512)),
    "thesis_res18_2": ((1, 1, 1), (64, 128, 256)),
    "thesis_res18_3": ((1, 1), (64, 128)),
    "thesis_res18_4": ((1,), (64,)),
}
for _name, (_sizes, _widths) in _THESIS_RES18.items():
  MODELS.register(_name, functools.partial(
      ResNet, stage_sizes=_sizes, widths=_widths, block=BasicBlock, stem_width=64,
      stem="cifar", head_pool="avg4"))
