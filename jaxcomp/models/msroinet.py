"""The MS-ROI network (Multi-Structure Region of Interest; thesis papers/001, Ch. 2.3).

Its weights, BatchNorm folding and the shipped network: `jaxcomp.msroi.network`.

    IMAGE -> [[conv3x3 -> ReLU] x 2 -> maxpool2] x 5 -> class maps -> GAP -> logits

A fully convolutional trunk shared by all classes (Sec. 2.3, technique ii: "share
feature maps across classes to jointly learn lower level features"), then the
class-specific layer: a 3x3 convolution with `num_classes * class_features`
filters and a ReLU, read as `class_features` feature maps `f_d^c` per class c
(the "set of 3D feature maps in which each feature map is learned for an
individual class"). The network computes

  * the class maps `M_c(x, y) = sum_d w_d^c f_d^c(x, y)`: the summand of Eq. 2.5,
    with a learned weight `w_d^c` for each of class c's own maps (CAM's Eq. 2.2
    restricted to the class's feature set);
  * `Z_c = mean_{x,y} M_c(x, y)`: Eq. 2.4 divided by the number of positions
    (global average pooling, as CAM; the sum would make Z grow with the input
    size, the mean keeps one scale for every size);
  * `logits_c = Z_c + b_c` with a learned per-class offset b_c, and the
    multi-label likelihood `P(c) = 1 / (1 + exp(-logits_c))` (Eq. 2.6 with its
    sign corrected). `logits_c > 0` is `Z_c > -b_c`: the offset is the
    per-class threshold T of Eq. 2.5 "determined during the training".

Why the weights `w_d^c` (the thesis sums the maps with weight 1): with weight
1, every map is a ReLU output, so `Z_c >= 0` and the only way to lower the
score of the absent classes (most classes of every image) is to switch the
class layer off. Trained so, on the composites of `train_network`, all class
maps were exactly zero after 20 Adam steps (measured: a dead class layer, held-out
mAP at chance). Learned signed weights let a feature vote against its class.

Any input size: the convolutions pad by 1, the poolings pad the right/bottom
edge ("SAME", ceil), so an [H, W] input gives [ceil(H / 32), ceil(W / 32)] maps
whose cell (i, j) covers the pixels [32 i, 32 i + 32) x [32 j, 32 j + 32). No
square crop (the author's code centre-crops and stretches, a bug not copied).

Perturbations for Aug-MSROI (Ch. 3.6, `a_{l+1} = f_l(a_l + Delta)`): with a
`key`, Gaussian noise of standard deviation `activation_noise` times the
activation's RMS (per example and layer) is added to the output of every
ReLU, and/or dropout at `dropout_rate` (the author's code keeps dropout with
keep-probability 0.7 after every convolution at inference).

Training-time BatchNorm (`batch_norm=True`, after each trunk convolution,
before its ReLU) makes the plain 10-convolution trunk train in the few
thousand steps two CPU cores allow; at inference it is an affine map per
channel, which `fold_batch_norm` folds into the convolution's kernel and
bias, so the shipped network is exactly `[conv -> relu] x 2 -> maxpool`.

In the classifier zoo: registered as "msroinet" (`jaxcomp.models.MODELS`), with
BatchNorm and `unit_input=False`, so that `config.model.name="msroinet"` trains it
through the trainer like any zoo model (normalised images in, softmax
cross-entropy); `train_network` trains it for the maps (multi-label composites).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS


def _perturb(a: jax.Array, key: jax.Array | None, activation_noise: float,
             dropout_rate: float) -> jax.Array:
  """Adds relative Gaussian noise and/or applies (inverted) dropout to `a` [B, h, w, C]."""
  if key is None or (not activation_noise and not dropout_rate):
    return a
  k_noise, k_drop = jax.random.split(key)
  if activation_noise:
    rms = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(a * a, axis=(1, 2, 3), keepdims=True)))
    a = a + activation_noise * rms * jax.random.normal(k_noise, a.shape, a.dtype)
  if dropout_rate:
    keep = jax.random.bernoulli(k_drop, 1.0 - dropout_rate, a.shape)
    a = jnp.where(keep, a / (1.0 - dropout_rate), 0.0)
  return a


class MSROINet(nn.Module):
  """MS-ROI classifier: shared conv trunk, class-specific maps, multi-label logits.

  Attributes:
    num_classes: C, the classes (10 for the shipped CIFAR-10 weights).
    widths: filters of the convolutions of each block; `len(widths)` blocks
      (5 in the thesis), each `[conv -> relu] x 2 -> maxpool`.
    class_features: D, the feature maps of each class in the class layer.
    batch_norm: BatchNorm "<conv>_bn" after every trunk convolution (training;
      `fold_batch_norm` removes it).
    unit_input: the images are RGB in [0, 1], mapped to [-1, 1] here (the maps'
      convention); False: the caller has normalised them (the zoo's convention).
    dtype: compute dtype of the convolutions (parameters, maps and logits float32).
  """
  num_classes: int = 10
  widths: tuple[int, ...] = (8, 16, 32, 64, 128)
  class_features: int = 4
  batch_norm: bool = False
  unit_input: bool = True
  dtype: common.Dtype = jnp.float32

  @property
  def stride(self) -> int:
    """The downsampling factor of the maps: 2 ** number of blocks."""
    return 2 ** len(self.widths)

  @nn.compact
  def __call__(self, images: jax.Array, *, key: jax.Array | None = None,
               activation_noise: float = 0.0, dropout_rate: float = 0.0, train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Logits and class maps of a batch.

    Args:
      images: [B, H, W, 3] float RGB in [0, 1] (normalised if not `unit_input`);
        any H, W >= 1.
      key: PRNG key of the activation perturbations (None: none).
      activation_noise: standard deviation of the Gaussian noise added to every
        ReLU output, relative to that activation's RMS (0: none).
      dropout_rate: dropout probability after every ReLU (0: none).
      train: BatchNorm uses the batch's statistics (and updates "batch_stats").

    Returns:
      `(logits, aux)`: logits [B, C] float32 (`Z_c + b_c`, Eq. 2.4 + 2.6) and
      aux with "features" [B, h, w, widths[-1]] (the trunk's output),
      "class_maps" [B, h, w, C] (`M_c = sum_d w_d^c f_d^c`) and
      "scores" [B, C] (`Z_c`) and "pre_logits" [B, C * D] (the class features
      averaged over positions: `logits_c = sum_d w_d^c pre_logits_{c, d} + b_c`),
      h = ceil(H / stride), w = ceil(W / stride).
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must have shape [B, H, W, 3], got {images.shape}")
    if not 0.0 <= dropout_rate < 1.0 or activation_noise < 0.0:
      raise ValueError(f"need 0 <= dropout_rate < 1 and activation_noise >= 0, got "
                       f"{dropout_rate} and {activation_noise}")
    num_layers = 2 * len(self.widths) + 1
    keys = [None] * num_layers if key is None else list(jax.random.split(key, num_layers))
    conv = functools.partial(common.conv, kernel_size=3, use_bias=True, dtype=self.dtype)
    x = images.astype(jnp.float32)
    x = (x * 2.0 - 1.0 if self.unit_input else x).astype(self.dtype)
    layer = 0
    for block, width in enumerate(self.widths):
      for i in range(2):
        name = f"conv{block + 1}_{i + 1}"
        x = conv(width, name=name)(x)
        if self.batch_norm:
          x = common.batch_norm(train=train, dtype=self.dtype, name=f"{name}_bn")(x)
        x = nn.relu(x)
        x = _perturb(x, keys[layer], activation_noise, dropout_rate)
        layer += 1
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    features = x
    f = nn.relu(conv(self.num_classes * self.class_features, name="class_conv")(x))
    f = _perturb(f.astype(jnp.float32), keys[layer], activation_noise, dropout_rate)
    f = f.reshape(*f.shape[:3], self.num_classes, self.class_features)
    weights = self.param("class_weights", nn.initializers.normal(self.class_features ** -0.5),
                         (self.num_classes, self.class_features), jnp.float32)
    maps = jnp.einsum("bhwcd,cd->bhwc", f, weights)
    scores = maps.mean(axis=(1, 2))
    offset = self.param("offset", nn.initializers.zeros, (self.num_classes,), jnp.float32)
    logits = scores + offset
    pre_logits = f.mean(axis=(1, 2)).reshape(f.shape[0], -1)
    return logits, {"features": features, "class_maps": maps, "scores": scores,
                    "pre_logits": pre_logits}


MODELS.register("msroinet", functools.partial(MSROINet, batch_norm=True, unit_input=False))
