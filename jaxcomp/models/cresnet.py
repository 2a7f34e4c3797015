"""cResNet: a ResNet-50 trunk on codec latents (SPEC Sec. 6; report 004, Table 2).

Classification in the compressed domain (Torfason et al. 2018; Deng & Karam
2021) reads the hyperprior's quantized latents y-hat and scales sigma-hat,
which are already 16x smaller than the image, so the network has no pixel
stem (Table 2: conv1 "None"). Layout:

  * one small bottleneck per input (conv2_x; `branch_i`): Table 2's
    1x1 32 -> 3x3 32 -> 1x1 128, or, as the report's code builds it
    (`branch_width=0`), 1x1 C_i -> 3x3 C_i -> 1x1 128 with C_i the input's
    channels (192 / 320 there); a projection shortcut (1x1 conv + BN);
  * their outputs concatenated (2 x 128 = 256 channels);
  * ResNet-50's conv3_x, conv4_x, conv5_x: [4, 6, 3] bottlenecks of widths
    128 / 256 / 512 (outputs 4x), each stage's first block with stride 2 (the
    torchvision layers 2-4 the report's code reuses);
  * global average pooling and a dense head.

`width` scales every width and `depth` every stage's block count (at least
one); the network downsamples by `2 ** 3`, so its inputs must be at least
8x8 (`min_input_size`), else `ValueError`. With `space_to_depth=s` each input
is first rearranged s x s -> channels: the pixel-domain baselines feed 32x32
images as 8x8x48 maps to the same trunk (the same classifier budget).

The inputs arrive concatenated on the channel axis, `[B, H, W, sum C_i]`
(`input_channels` says how to split them; by default two equal halves:
y-hat then sigma-hat). Augmentation of several maps with one key (aligned
crops and flips) and the deterministic evaluation crop are the pure
functions `crop_flip` and `center_crop`.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common
from jaxcomp.models.registry import MODELS
from jaxcomp.models.resnet import Bottleneck

STAGE_SIZES = (4, 6, 3)         # ResNet-50's conv3_x, conv4_x, conv5_x
STAGE_WIDTHS = (128, 256, 512)  # bottleneck widths; outputs 4x
BRANCH_WIDTH = 32               # Table 2's conv2_x, per input
BRANCH_OUT = 128


class BranchBottleneck(nn.Module):
  """`relu(bn(1x1 out)(relu(bn(3x3 w)(relu(bn(1x1 w)(x))))) + bn(1x1 out)(x))`, stride 1."""
  width: int
  out_features: int
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(train=train, dtype=self.dtype)
    y = common.conv_bn(x, self.width, 1, name="conv1", **kw)
    y = common.conv_bn(y, self.width, 3, name="conv2", **kw)
    y = common.conv_bn(y, self.out_features, 1, relu=False, name="conv3", **kw)
    shortcut = x if x.shape[-1] == self.out_features else common.conv_bn(
        x, self.out_features, 1, relu=False, name="proj_conv", **kw)
    return nn.relu(shortcut + y)


def _scaled(n: int, factor: float) -> int:
  return max(1, int(round(n * factor)))


def space_to_depth(x: jax.Array, s: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/s, W/s, s*s*C] (each s x s block's pixels become channels)."""
  b, h, w, c = x.shape
  if h % s or w % s:
    raise ValueError(f"space_to_depth({s}) needs height and width divisible by {s}, got {h}x{w}")
  x = x.reshape(b, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // s, w // s, s * s * c)


class CResNet(nn.Module):
  """The compressed-domain ResNet (module docstring).

  Attributes:
    num_classes: K.
    dtype: compute dtype (parameters stay float32).
    input_channels: channels of each input in the concatenated `x`; () -> two
      equal halves (y-hat, sigma-hat).
    branch_width: width of each input's bottleneck (Table 2: 32); 0 -> the
      input's own channel count (the report's code).
    width: multiplier of every width (branches, their outputs, the stages).
    depth: multiplier of the blocks per stage (at least 1 each).
    strides: stride of the first block of each stage.
    space_to_depth: rearrange each input s x s -> channels first (1: off).
  """
  num_classes: int
  dtype: common.Dtype = jnp.float32
  input_channels: Sequence[int] = ()
  branch_width: int = BRANCH_WIDTH
  width: float = 1.0
  depth: float = 1.0
  strides: Sequence[int] = (2, 2, 2)
  space_to_depth: int = 1

  @property
  def min_input_size(self) -> int:
    """The smallest input height / width (after space-to-depth) the network accepts."""
    return math.prod(self.strides)

  def split(self, x: jax.Array) -> list[jax.Array]:
    """The inputs of `x` [B, H, W, sum C_i] (`input_channels`)."""
    channels = tuple(self.input_channels) or (x.shape[-1] // 2,) * 2
    if sum(channels) != x.shape[-1] or min(channels) < 1:
      raise ValueError(f"input_channels {channels} do not split the input's {x.shape[-1]} "
                       "channels (by default: two equal halves, y-hat and sigma-hat)")
    bounds = [0, *itertools.accumulate(channels)]
    return [x[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """x: float [B, H, W, sum C_i] -> (logits [B, K] float32, {"features", "pre_logits"})."""
    common.check_inputs(x, self.num_classes)
    if self.width <= 0 or self.depth <= 0:
      raise ValueError(f"width and depth multipliers must be > 0, got {self.width}, {self.depth}")
    inputs = [space_to_depth(v, self.space_to_depth) if self.space_to_depth > 1 else v
              for v in self.split(x)]
    h, w = inputs[0].shape[1:3]
    if min(h, w) < self.min_input_size:
      raise ValueError(f"inputs of {h}x{w} are too small for the network: it downsamples by "
                       f"{self.min_input_size} (strides {tuple(self.strides)}), so needs at "
                       f"least {self.min_input_size}x{self.min_input_size}")
    branches = []
    for i, v in enumerate(inputs):
      bw = _scaled(self.branch_width or v.shape[-1], self.width)
      branches.append(BranchBottleneck(bw, _scaled(BRANCH_OUT, self.width), dtype=self.dtype,
                                       name=f"branch{i + 1}")(v.astype(self.dtype), train))
    x = jnp.concatenate(branches, axis=-1)
    for i, (size, width, stride) in enumerate(zip(STAGE_SIZES, STAGE_WIDTHS, self.strides)):
      for j in range(_scaled(size, self.depth)):
        x = Bottleneck(_scaled(width, self.width), stride if j == 0 else 1, dtype=self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
    return common.classify(x, common.global_avg_pool(x), num_classes=self.num_classes,
                           dtype=self.dtype)


MODELS.register("cresnet39", CResNet)
MODELS.register("cresnet39_coded", functools.partial(CResNet, branch_width=0))


def _check_maps(maps: Sequence[jax.Array]) -> None:
  if not maps or any(m.ndim != 4 or m.shape[:3] != maps[0].shape[:3] for m in maps):
    raise ValueError(f"expected maps [B, H, W, C_i] of one batch and size, got "
                     f"{[tuple(m.shape) for m in maps]}")


def _resize(x: jax.Array, size: int) -> jax.Array:
  return x if not size else jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), "bilinear")


def crop_flip(maps: Sequence[jax.Array], key: jax.Array, *, size: int, pad: int = 0,
              flip: bool = True, resize: int = 0) -> tuple[jax.Array, ...]:
  """The same random crop and flip of every map of each example, from ONE key.

  The maps (y-hat and sigma-hat) are resized to `resize` x `resize` (bilinear,
  0: not), zero-padded by `pad`, cropped to `size` x `size` at a random offset
  per example and flipped left-right with probability 1/2 -- the same offset
  and flip for every map of an example (report 004 crops y-hat and sigma-hat
  independently, which misaligns them; REFERENCE_CODE Sec. C). Report 004:
  `resize=32, size=28`; CIFAR-style on 8x8 latents: `pad=1, size=8`.

  Args:
    maps: float [B, H, W, C_i] each, one batch and size.
    key: one PRNG key for the whole batch.
    size: crop side, <= H + 2 pad (after resizing).
    pad: zeros added on every side before cropping.
    flip: draw horizontal flips.
    resize: side to resize to first; 0 keeps H x W.

  Returns:
    The maps cropped, [B, size, size, C_i] each, in the order given.
  """
  _check_maps(maps)
  x = _resize(jnp.concatenate(maps, axis=-1), resize)
  b, h, w, c = x.shape
  if not 0 < size <= min(h, w) + 2 * pad:
    raise ValueError(f"crop size {size} must be in [1, {min(h, w) + 2 * pad}] for {h}x{w} "
                     f"maps padded by {pad}")
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  key_crop, key_flip = jax.random.split(key)
  offsets = jax.random.randint(key_crop, (b, 2), 0,
                               jnp.asarray([h + 2 * pad - size + 1, w + 2 * pad - size + 1]))
  crops = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (size, size, c)))(
      x, offsets)
  if flip:
    flips = jax.random.bernoulli(key_flip, 0.5, (b,))
    crops = jnp.where(flips[:, None, None, None], crops[:, :, ::-1], crops)
  return _split_like(crops, maps)


def center_crop(maps: Sequence[jax.Array], *, size: int, resize: int = 0
                ) -> tuple[jax.Array, ...]:
  """The evaluation view of `crop_flip`: resize, then the centred `size` crop (deterministic)."""
  _check_maps(maps)
  x = _resize(jnp.concatenate(maps, axis=-1), resize)
  h, w = x.shape[1:3]
  if not 0 < size <= min(h, w):
    raise ValueError(f"crop size {size} must be in [1, {min(h, w)}] for {h}x{w} maps")
  top, left = (h - size) // 2, (w - size) // 2
  return _split_like(x[:, top:top + size, left:left + size], maps)


def _split_like(x: jax.Array, maps: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
  bounds = [0, *itertools.accumulate([m.shape[-1] for m in maps])]
  return tuple(x[..., a:b] for a, b in zip(bounds[:-1], bounds[1:]))
