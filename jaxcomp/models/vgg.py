"""VGG networks with BatchNorm: CRD's CIFAR VGGs and the thesis's VGG11 variants.

Every convolution is `conv3x3 (with bias) -> BN -> ReLU`; convolutions are
grouped in stages and 2x2 max-pools sit between stages. Two layouts:
  * "crd" (HobbitLong/RepDistiller `models/vgg.py`, `vgg*_bn`, as JPEG-DL trains
    them): pool after every stage but the last while the map is larger than
    4x4 (CRD pools after stages 1-3, and after stage 4 only for 64x64 inputs:
    the same rule on 32x32 and 64x64), then global average pooling -> Linear.
  * "thesis" (Table 3.2 of papers/000, kuangliu's CIFAR VGG): pool after every
    stage, then flatten -> Linear (a 32x32 input ends at 1x1).

Registered names: vgg8, vgg11, vgg13 (CRD configurations "S", "A", "B");
thesis_vgg11, thesis_vgg11_1..5 (Table 3.2, recomputed counts in the tests).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS


class VGG(nn.Module):
  """A plain conv-BN-ReLU network.

  Attributes:
    num_classes: K, the width of the head.
    dtype: compute dtype (parameters stay float32).
    stages: output channels of each convolution, grouped by stage.
    layout: "crd" or "thesis" (pooling rules in the module docstring).
  """
  num_classes: int
  dtype: common.Dtype = jnp.float32
  stages: Sequence[Sequence[int]] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
  layout: str = "crd"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: [B, H, W, C] normalised float -> (logits [B, K] float32, aux)."""
    common.check_inputs(x, self.num_classes)
    if self.layout not in ("crd", "thesis"):
      raise ValueError(f"layout must be 'crd' or 'thesis', got {self.layout!r}")
    x = x.astype(self.dtype)
    for i, stage in enumerate(self.stages):
      if i > 0 and (self.layout == "thesis" or min(x.shape[1:3]) > 4):
        x = _max_pool2(x)
      for j, width in enumerate(stage):
        x = common.conv_bn(x, width, 3, use_bias=True, train=train, dtype=self.dtype,
                           name=f"stage{i + 1}_conv{j + 1}")
    if self.layout == "thesis":
      pre_logits = common.flatten(_max_pool2(x))
    else:
      pre_logits = common.global_avg_pool(x)
    return common.classify(x, pre_logits, num_classes=self.num_classes, dtype=self.dtype)


def _max_pool2(x: jax.Array) -> jax.Array:
  if min(x.shape[1:3]) < 2:
    raise ValueError(f"feature map {x.shape} too small for another 2x2 max-pool")
  return common.max_pool(x, 2, 2)

_CRD = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}
# Table 3.2: VGG11 itself has two convolutions in each of its last three stages
# (the thesis lists one); the reduced variants have five single-conv stages.
_THESIS = {
    "thesis_vgg11": _CRD["vgg11"],
    "thesis_vgg11_1": (64, 128, 256, 256, 256),
    "thesis_vgg11_2": (64, 128, 128, 128, 256),
    "thesis_vgg11_3": (64, 64, 64, 128, 128),
    "thesis_vgg11_4": (32, 32, 32, 64, 128),
    "thesis_vgg11_5": (16, 16, 16, 32, 128),
}
for _name, _stages in _CRD.items():
  MODELS.register(_name, functools.partial(VGG, stages=_stages, layout="crd"))
for _name, _stages in _THESIS.items():
  _stages = tuple(s if isinstance(s, tuple) else (s,) for s in _stages)
  MODELS.register(_name, functools.partial(VGG, stages=_stages, layout="thesis"))
