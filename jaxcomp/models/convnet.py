"""The vanilla ConvNet C^n(X) of the RePr chapter (Brandeis thesis, Ch. 5).

`Img -> [conv3x3(X) -> BN -> ReLU]^n -> FC` (Sec. 5.3; SPEC Sec. 10). The
convolutions have biases and are followed by BatchNorm: that is what reproduces
Table 5.5's counts without the final FC, `(9C + 1)X + 2X + (n - 1)((9X + 1)X + 2X)`
= 19,584 / 66,144 / 112,704 / 159,264 for n = 3 / 8 / 13 / 18, X = 32, C = 3
(printed 20 / 66 / 113 / 159 K; without BN n = 3 would give 19,488 ~ 19 K).

Pooling before the FC: the thesis draws none, and there is no downsampling
either, so the FC reads the flattened H x W x X map (`head_pool="flatten"`, the
default; the public reimplementation siahuat0727/RePr does the same with
`Linear(32*32*32, 10)`). Two more hints point that way: the table leaves the FC
out of the counts (327,690 weights for CIFAR-10 would dwarf the convolutions),
and C^3(32) reaches 72-73 % on CIFAR-10, which a 7x7 receptive field followed by
global pooling would not. `head_pool="global"` (global average pooling, a
[B, X] `pre_logits` and `features @ head.kernel` class maps) is the option for
callers that need size independence or CAMs.

Registered: `convnet` (attributes `depth` = n, `width` = X) and the aliases
convnet_c{n}_32 for n in 2, 3, 8, 13, 18 (Table 5.5, Fig. 5.10-5.11).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS


@MODELS.register("convnet")
class ConvNet(nn.Module):
  """C^n(X).

  Attributes:
    num_classes: K, the width of the head.
    dtype: compute dtype (parameters stay float32).
    depth: n, the number of conv-BN-ReLU layers.
    width: X, the filters of every layer.
    head_pool: "flatten" (the thesis: pre_logits [B, H * W * X]) or "global"
      (average over space: pre_logits [B, X]).
  """
  num_classes: int
  dtype: common.Dtype = jnp.float32
  depth: int = 3
  width: int = 32
  head_pool: str = "flatten"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: [B, H, W, C] normalised float -> (logits [B, K] float32, aux)."""
    common.check_inputs(x, self.num_classes)
    if self.depth < 1 or self.width < 1:
      raise ValueError(f"depth and width must be >= 1, got {self.depth}, {self.width}")
    if self.head_pool not in ("flatten", "global"):
      raise ValueError(f"head_pool must be 'flatten' or 'global', got {self.head_pool!r}")
    x = x.astype(self.dtype)
    for i in range(1, self.depth + 1):
      x = common.conv_bn(x, self.width, 3, use_bias=True, train=train, dtype=self.dtype,
                         name=f"conv{i}")
    pre_logits = common.flatten(x) if self.head_pool == "flatten" else common.global_avg_pool(x)
    return common.classify(x, pre_logits, num_classes=self.num_classes, dtype=self.dtype)


for _n in (2, 3, 8, 13, 18):
  MODELS.register(f"convnet_c{_n}_32", functools.partial(ConvNet, depth=_n, width=32))
