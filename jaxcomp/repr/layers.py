"""Where the filters of a parameter tree are: conv kernels, their BatchNorms, responses.

A *filter layer* is every leaf named "kernel" with 4 dimensions (Flax's HWIO
layout `[kh, kw, C_in / groups, C_out]`); its path is the "/"-joined module
path, e.g. "stage1_block1/conv1". Its filters are the C_out slices of the last
axis. Paired with it, when present:
  * its bias, the leaf "bias" [C_out] of the same module;
  * the BatchNorm that normalises its output: the sibling module "<name>_bn"
    (the zoo's `common.conv_bn` naming, documented in `jaxcomp.models.common`),
    whose "scale" / "bias" [C_out] are the filter's gamma / beta. Convs without
    such a sibling (pre-activation blocks, DenseNet's second conv, SqueezeNet)
    have no BatchNorm of their own: the BatchNorm that follows them normalises a
    sum or a concatenation, not this conv alone.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
from flax import traverse_util

Path = tuple[str, ...]


class FilterLayer(NamedTuple):
  """The parameter paths of one conv layer's filters (tuples of module names)."""
  kernel: Path            # (..., name, "kernel")
  bias: Path | None       # (..., name, "bias") when the conv has a bias
  bn: Path | None         # (..., name + "_bn") when a BatchNorm normalises its output
  num_filters: int        # C_out


def _flat(params: Any) -> dict[Path, Any]:
  if not isinstance(params, Mapping):
    raise ValueError(f"expected a parameter tree of nested dicts, got {type(params).__name__}")
  return traverse_util.flatten_dict(params)


def filter_layers(params: Any) -> dict[str, FilterLayer]:
  """Every conv layer of `params` (e.g. `variables["params"]`), keyed by its path.

  Raises:
    ValueError: `params` is not a nested dict, has no 4-D "kernel" leaf, or a
      "<name>_bn" sibling's scale / bias does not have C_out entries.
  """
  flat = _flat(params)
  layers = {}
  for key, leaf in flat.items():
    if key[-1] != "kernel" or getattr(leaf, "ndim", 0) != 4:
      continue
    module = key[:-1]
    c_out = leaf.shape[-1]
    bias = module + ("bias",)
    bn = module[:-1] + (module[-1] + "_bn",)
    bn_leaves = [flat[bn + (n,)] for n in ("scale", "bias") if bn + (n,) in flat]
    for v in bn_leaves:
      if v.shape != (c_out,):
        raise ValueError(f"BatchNorm {'/'.join(bn)} has shape {v.shape}, but conv "
                         f"{'/'.join(module)} has {c_out} filters")
    layers["/".join(module)] = FilterLayer(
        kernel=key, bias=bias if bias in flat else None,
        bn=bn if bn_leaves else None, num_filters=c_out)
  if not layers:
    raise ValueError("no conv kernels (4-D leaves named 'kernel') in the parameter tree")
  return layers


def conv_kernels(params: Any) -> dict[str, jax.Array]:
  """{layer path: kernel [kh, kw, C_in / groups, C_out]} for every conv of `params`."""
  flat = _flat(params)
  return {path: flat[layer.kernel] for path, layer in filter_layers(params).items()}


def first_conv(params: Any, *, image_channels: int) -> str:
  """The path of the conv that reads the image.

  Identified as the only conv whose kernel has `image_channels` input channels
  (parameter-tree order is not reliable: `jax.tree` flattening sorts keys, so
  "conv10" comes before "conv2"). On resnet20 that is "stem_conv", on
  convnet_c3_32 "conv1".

  Raises:
    ValueError: no conv, or more than one, has `image_channels` input channels
      (e.g. a depthwise conv on a grayscale image): pass the path yourself.
  """
  matches = [p for p, k in conv_kernels(params).items() if k.shape[2] == image_channels]
  if len(matches) != 1:
    raise ValueError(f"{len(matches)} convs have {image_channels} input channels "
                     f"({matches}); name the first conv explicitly")
  return matches[0]


def filter_responses(model: nn.Module, variables: Any, x: jax.Array, *,
                     train: bool = False) -> dict[str, jax.Array]:
  """Each filter's response on a batch, captured without model surgery.

  The response of a conv is the output of its BatchNorm when it has one
  ("<name>_bn"), else the conv's own output: the pre-ReLU activation, through
  `capture_intermediates` on the `nn.Conv` / `nn.BatchNorm` calls. Pure and
  jit-able (`model` static). A module called several times keeps its first call.

  Args:
    model: a zoo model, `model.apply(variables, x, train=...)`.
    variables: {"params": ..., "batch_stats": ...}; masked params if filters are
      dropped (`masks.apply_masks`).
    x: [B, H, W, C] normalised float images.
    train: BatchNorm mode; False (running statistics) by default. With True the
      running statistics are not updated (the mutated collection is discarded).

  Returns:
    {layer path: [B, h, w, C_out]} for every conv of `variables["params"]`.
  """
  layers = filter_layers(variables["params"])
  capture = lambda mdl, method: isinstance(mdl, (nn.Conv, nn.BatchNorm)) and method == "__call__"
  mutable = ["intermediates", "batch_stats"] if train else ["intermediates"]
  _, state = model.apply(variables, x, train=train, capture_intermediates=capture,
                         mutable=mutable)
  flat = traverse_util.flatten_dict(state["intermediates"])
  out = {}
  for path, layer in layers.items():
    module = layer.bn if layer.bn is not None else layer.kernel[:-1]
    out[path] = flat[module + ("__call__",)][0]
  return out
