"""Filter masks that hold in the forward pass and in the optimizer updates (RePr, Ch. 5).

A *mask tree* is a nested dict shaped like the subset of the parameter tree
that belongs to conv filters: for every conv layer its "kernel", its "bias"
(if any) and the "scale" / "bias" of its BatchNorm (if any, see
`layers.filter_layers`), each a float32 [C_out] vector, 1.0 = kept, 0.0 =
dropped, applied along the last axis of the parameter. Its structure is fixed
by the model, so it can live in a jitted train state and change value only.

Forward: `apply_masks(params, masks)` multiplies the parameters by the mask
before `model.apply`, no model surgery. A dropped filter's kernel and bias
are 0, so its conv output is exactly 0; its BatchNorm computes
`0 * (x - mean) / sqrt(var + eps) + 0 = 0` exactly as well (masking the kernel
alone would not do: BN would add beta - gamma * mean / sigma). The gradient
of a masked parameter is the gradient times the mask, 0 for dropped filters.

Updates: `mask_updates()` is the last link of the optimizer chain; it zeroes
the final updates of dropped filters, after weight decay and momentum / Adam,
which keep moving them otherwise (`optax.masked` cannot: it masks whole
leaves and passes the others through). Dropped parameters are then
bit-identical from step to step. The masks live in its state: `set_masks`.

A simpler alternative leaves the loss alone: `params = apply_masks(params, m)`
once at the drop event, then `mask_updates`; the stored values are 0 and stay
0, so do the outputs. The dropped filters' old values are lost, which the
thesis re-initialisation does not need (but for its every-filter-dropped norm)
and the "official" one does (its QR reads them).

Not masked: the next layer's weights that read a dropped channel. They see a
zero input, so their gradient is 0, but weight decay still shrinks them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from jaxcomp.repr import layers as layers_lib

Masks = dict[str, Any]


def filter_masks(params: Any, dropped: dict[str, jax.Array]) -> Masks:
  """The mask tree of `params` for the `dropped` filters (all kept where a layer is absent).

  Args:
    params: the parameter tree (`variables["params"]`).
    dropped: {layer path: [C_out] bool, True = dropped} (`selection.select_filters`);
      `{}` gives all-ones masks.

  Returns:
    A mask tree (module doc): float32 [C_out] leaves. jit-able.
  """
  layers = layers_lib.filter_layers(params)
  present = traverse_util.flatten_dict(params)
  unknown = set(dropped) - set(layers)
  if unknown:
    raise ValueError(f"dropped names unknown conv layers {sorted(unknown)}")
  flat = {}
  for path, layer in layers.items():
    m = jnp.ones((layer.num_filters,), jnp.float32)
    if path in dropped:
      d = jnp.asarray(dropped[path])
      if d.shape != (layer.num_filters,):
        raise ValueError(f"dropped[{path!r}] has shape {d.shape}, expected ({layer.num_filters},)")
      m = 1.0 - d.astype(jnp.float32)
    keys = [layer.kernel, layer.bias]
    if layer.bn is not None:
      keys += [layer.bn + ("scale",), layer.bn + ("bias",)]
    # One buffer per leaf: a train state whose leaves share a buffer cannot be donated.
    flat.update((k, jnp.copy(m)) for k in keys if k in present)
  return traverse_util.unflatten_dict(flat)


def _map_masked(fn: Callable[[jax.Array, jax.Array], jax.Array], tree: Any,
                masks: Masks) -> Any:
  flat = traverse_util.flatten_dict(tree)
  for key, m in traverse_util.flatten_dict(masks).items():
    if key not in flat:
      raise ValueError(f"mask {'/'.join(key)} has no matching parameter")
    flat[key] = fn(flat[key], m)
  return traverse_util.unflatten_dict(flat)


def apply_masks(params: Any, masks: Masks) -> Any:
  """`params` with every masked leaf multiplied by its mask (last axis). jit-able."""
  return _map_masked(lambda p, m: p * m.astype(p.dtype), params, masks)


def masked_apply(apply_fn: Callable[..., Any]) -> Callable[..., Any]:
  """`apply_fn(variables, ...)` -> `f(variables, masks, ...)` with masked params.

  E.g. `masked_apply(model.apply)(variables, masks, x, train=True,
  mutable=["batch_stats"])`. The masks are an argument, not a constant, so
  one jitted function serves every phase of the RePr schedule.
  """
  def f(variables: Any, masks: Masks, *args: Any, **kwargs: Any) -> Any:
    return apply_fn({**variables, "params": apply_masks(variables["params"], masks)},
                    *args, **kwargs)
  return f


class MaskUpdatesState(NamedTuple):
  masks: Masks


def mask_updates() -> optax.GradientTransformation:
  """Zeroes the updates of dropped filters; chain it *last* (after decay, momentum, Adam).

  `init(params)` starts with every filter kept; `set_masks(opt_state, masks)`
  changes the masks. A dropped entry's update becomes -0.0, the one value with
  `p + u == p` bit for bit for every p (including p = +0.0 and -0.0), so
  `optax.apply_updates` leaves dropped parameters bit-identical.
  """
  def init(params: Any) -> MaskUpdatesState:
    return MaskUpdatesState(masks=filter_masks(params, {}))

  def update(updates: Any, state: MaskUpdatesState, params: Any = None
             ) -> tuple[Any, MaskUpdatesState]:
    del params
    masked = _map_masked(lambda u, m: jnp.where(m > 0, u, jnp.asarray(-0.0, u.dtype)),
                         updates, state.masks)
    return masked, state

  return optax.GradientTransformation(init, update)


def _is_mask_state(x: Any) -> bool:
  return isinstance(x, MaskUpdatesState)


def set_masks(opt_state: Any, masks: Masks) -> Any:
  """`opt_state` with the masks of every `mask_updates` state in it replaced by `masks`."""
  found = []

  def replace(x: Any) -> Any:
    if not _is_mask_state(x):
      return x
    if jax.tree.structure(x.masks) != jax.tree.structure(masks):
      raise ValueError("masks do not have the structure of the optimizer's masks")
    found.append(x)
    return MaskUpdatesState(masks=masks)

  out = jax.tree.map(replace, opt_state, is_leaf=_is_mask_state)
  if not found:
    raise ValueError("the optimizer state has no mask_updates state")
  return out


def reset_optimizer_moments(opt_state: Any, masks: Masks) -> Any:
  """Zeroes the optimizer state of dropped filters (mask 0), nothing else.

  A leaf of `opt_state` is the moment of a masked parameter when the dict
  keys that end its key path are exactly that parameter's path and its last
  axis has C_out entries: true of every optax state, which keeps its
  parameter-shaped trees (SGD's `trace`, Adam's `mu` and `nu`, inside
  `chain` / `multi_transform`) as fields holding the parameter dict. Other
  entries (kept filters, other parameters, counts, the masks) are untouched,
  bit for bit. Adam's `count` is per optimizer, not per filter: re-introduced
  filters' zero moments are bias-corrected as at step `count`, so their first
  update is `(1 - b1) / sqrt(1 - b2)` (~3.2 for the defaults) times the
  learning rate in each coordinate.

  Args:
    opt_state: any optax state.
    masks: mask tree (`filter_masks(params, dropped)`, 0 = reset).
  """
  flat_masks = traverse_util.flatten_dict(masks)

  def reset(path: tuple[Any, ...], x: Any) -> Any:
    if _is_mask_state(x) or not hasattr(x, "shape") or x.ndim == 0:
      return x
    names = []
    for k in reversed(path):
      if not isinstance(k, jax.tree_util.DictKey):
        break
      names.insert(0, k.key)
    m = flat_masks.get(tuple(names))
    if m is None or x.shape[-1] != m.shape[0]:
      return x
    return jnp.where(m > 0, x, jnp.zeros((), x.dtype))

  return jax.tree_util.tree_map_with_path(reset, opt_state, is_leaf=_is_mask_state)
