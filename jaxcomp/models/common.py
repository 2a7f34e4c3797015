"""Pieces every classifier of the zoo shares: layer factories, pooling, the head.

All models take NHWC float images that the caller has already normalised and
return `(logits, aux)`:
  * `logits`: [B, num_classes] float32, whatever the compute dtype;
  * `aux["features"]`: [B, h, w, C], the last feature map before pooling;
  * `aux["pre_logits"]`: [B, D], the input of the final dense layer "head"
    (`logits = head(pre_logits)`); D = C where the model pools globally, so that
    a class activation map is `features @ head.kernel` (R-CAM, Eq. 4.4-4.5 of
    the Brandeis thesis).

Parameters are float32; `dtype` is the compute dtype (float32 or bfloat16).
BatchNorm follows PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5),
its running statistics live in the "batch_stats" collection.

Naming: a BatchNorm that normalises the output of convolution "<name>" is
"<name>_bn" (`conv_bn`), so that filter-level methods (RePr resets the BN
scale and bias of a re-initialised filter) find the pair by name. A BatchNorm
that normalises a block's input (pre-activation blocks, DenseNet) is "pre_bn".
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.ops.conv import conv_general_dilated

Dtype = Any
Aux = dict[str, jax.Array]

# He et al. 2015 normal init with fan_out = k*k*out_channels, as torchvision's
# ResNet and the CRD models (`normal(0, sqrt(2 / n))`, n = k*k*out) do.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's nn.Linear default for the weight: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
HEAD_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(features: int, kernel_size: int, *, strides: int = 1, groups: int = 1,
         use_bias: bool = False, padding: int | None = None,
         kernel_init: nn.initializers.Initializer = CONV_INIT, dtype: Dtype,
         name: str) -> nn.Conv:
  """A square 2-D convolution padded as PyTorch pads (`k // 2` on every side).

  Flax's "SAME" pads a stride-2 convolution of an even input by (0, 1), PyTorch
  by (1, 1); the explicit symmetric padding keeps the two frameworks' outputs
  identical for equal weights.
  """
  p = kernel_size // 2 if padding is None else padding
  return nn.Conv(features, (kernel_size, kernel_size), strides=strides,
                 padding=((p, p), (p, p)), feature_group_count=groups,
                 use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, name=name,
                 conv_general_dilated=conv_general_dilated)


def batch_norm(*, train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch's momentum (0.1 -> 0.9 here) and epsilon (1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, name=name)


def conv_bn(x: jax.Array, features: int, kernel_size: int, *, train: bool, dtype: Dtype,
            name: str, strides: int = 1, groups: int = 1, use_bias: bool = False,
            relu: bool = True) -> jax.Array:
  """`relu(bn(conv(x)))` (no ReLU with `relu=False`); layers "<name>", "<name>_bn".

  Call it inside a compact `__call__`: the layers belong to that module.
  """
  x = conv(features, kernel_size, strides=strides, groups=groups, use_bias=use_bias,
           dtype=dtype, name=name)(x)
  x = batch_norm(train=train, dtype=dtype, name=f"{name}_bn")(x)
  return nn.relu(x) if relu else x


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """Max pooling [B, H, W, C] -> [B, H', W', C] with -inf padding (PyTorch)."""
  return nn.max_pool(x, (window, window), (stride, stride),
                     padding=((padding, padding), (padding, padding)))


def avg_pool(x: jax.Array, window: int) -> jax.Array:
  """Non-overlapping `window` x `window` average pooling (PyTorch `avg_pool2d`)."""
  return nn.avg_pool(x, (window, window), (window, window))


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C], the mean over space, reduced in float32."""
  return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)


def check_inputs(x: jax.Array, num_classes: int) -> None:
  """Raises ValueError unless `x` is a float [B, H, W, C] batch and num_classes >= 1."""
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  if x.ndim != 4:
    raise ValueError(f"expected images [B, H, W, C], got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"expected float images (already normalised), got {x.dtype}")


def classify(features: jax.Array, pre_logits: jax.Array, *, num_classes: int,
             dtype: Dtype) -> tuple[jax.Array, Aux]:
  """Applies the dense layer "head" to `pre_logits` [B, D].

  Must be called inside a compact `__call__`, so that "head" belongs to it.

  Returns:
    logits [B, num_classes] float32 and {"features", "pre_logits"}.
  """
  logits = nn.Dense(num_classes, dtype=dtype, kernel_init=HEAD_INIT,
                    name="head")(pre_logits)
  return logits.astype(jnp.float32), {"features": features, "pre_logits": pre_logits}


def flatten(x: jax.Array) -> jax.Array:
  """[B, ...] -> [B, prod(...)] (row-major over H, W, C)."""
  return x.reshape(x.shape[0], -1)
