"""SqueezeNet 1.1 (Iandola et al. 2016), as torchvision builds it.

`conv3x3/2 (64) -> ReLU -> maxpool -> Fire x2 -> maxpool -> Fire x2 -> maxpool ->
Fire x4 -> dropout -> conv1x1 (K) -> ReLU -> global average pool`. The max-pools
are 3x3 stride 2 with PyTorch's `ceil_mode=True`. Initialisation as torchvision:
He uniform (fan_in) for the convolutions, N(0, 0.01) for the classifier, zero
biases; 1,235,496 parameters for 1000 classes.

The classifier is a 1x1 convolution applied before pooling. It is the dense
layer "head" here, applied at every position (`features @ head.kernel + bias` is
the class map), so `logits = mean_hw(relu(head(dropout(features))))`;
`pre_logits` is `mean_hw(features)` [B, 512], which the head does not read
(the ReLU sits between head and pooling).

Dropout (rate 0.5, torchvision's) is active when `train=True`: `apply` then
needs `rngs={"dropout": key}`; `dropout_rate=0.0` removes it.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS

_HE_UNIFORM = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
# (squeeze, expand1x1, expand3x3) per Fire module; None marks a max-pool.
_FIRES = (None, (16, 64, 64), (16, 64, 64), None, (32, 128, 128), (32, 128, 128), None,
          (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))


def max_pool_ceil(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
  """Max pooling with PyTorch's `ceil_mode=True` (the last partial window counts)."""
  pads = []
  for size in x.shape[1:3]:
    out = math.ceil((size - window) / stride) + 1
    pads.append((0, max((out - 1) * stride + window - size, 0)))
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


class Fire(nn.Module):
  """`concat(relu(e1x1(s)), relu(e3x3(s)))`, `s = relu(squeeze1x1(x))`."""
  squeeze: int
  expand1x1: int
  expand3x3: int
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(use_bias=True, kernel_init=_HE_UNIFORM, dtype=self.dtype)
    s = nn.relu(common.conv(self.squeeze, 1, name="squeeze", **kw)(x))
    e1 = nn.relu(common.conv(self.expand1x1, 1, name="expand1x1", **kw)(s))
    e3 = nn.relu(common.conv(self.expand3x3, 3, name="expand3x3", **kw)(s))
    return jnp.concatenate([e1, e3], axis=-1)


@MODELS.register("squeezenet1_1")
class SqueezeNet(nn.Module):
  """Attributes: num_classes; dtype; dropout_rate before the classifier."""
  num_classes: int
  dtype: common.Dtype = jnp.float32
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: [B, H, W, C] normalised float -> (logits [B, K] float32, aux)."""
    common.check_inputs(x, self.num_classes)
    x = x.astype(self.dtype)
    x = common.conv(64, 3, strides=2, padding=0, use_bias=True, kernel_init=_HE_UNIFORM,
                    dtype=self.dtype, name="stem_conv")(x)
    x = nn.relu(x)
    number = 2  # the paper's names fire2 .. fire9 (conv1 is the stem)
    for fire in _FIRES:
      if fire is None:
        x = max_pool_ceil(x)
      else:
        x = Fire(*fire, dtype=self.dtype, name=f"fire{number}")(x)
        number += 1
    features = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype,
                 kernel_init=nn.initializers.normal(0.01), name="head")(x)
    logits = common.global_avg_pool(nn.relu(x)).astype(jnp.float32)
    return logits, {"features": features, "pre_logits": common.global_avg_pool(features)}
