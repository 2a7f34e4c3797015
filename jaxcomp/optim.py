"""Optimizers, learning-rate schedules and parameter groups, all built from config data.

`config.optim_groups` is an ordered list of `(regex, spec)` pairs. Every
parameter's path (`"jpeg_layer/round_0/luma_q"`) takes the first pair whose
regex `re.search`es it; unmatched parameters use `config.optim`. A spec is
the name of an optimizer section of the config (`"jpeg_optim"`, `"aux_optim"`,
... — any field built by `config_lib.optimizer_config()`), a dict of
`optimizer_config` overrides, or `"frozen"` (zero updates, no optimizer state).
A regex that matches no parameter is a start-up error naming it.

Optimizers and schedules are registries (`OPTIMIZERS`, `SCHEDULES`): a new
one is one registered function.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import flax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcomp import config_lib
from jaxcomp.registry import Registry

FROZEN = "frozen"
DEFAULT_GROUP = "optim"

# name -> (c: optimizer config, schedule) -> the update rule (after clipping and L2).
OPTIMIZERS: Registry[Callable[[ml_collections.ConfigDict, optax.Schedule],
                              optax.GradientTransformation]] = Registry("optimizer")
# name -> (c, lr, steps_per_epoch, total_steps, warmup) -> schedule after warm-up.
SCHEDULES: Registry[Callable[..., optax.Schedule]] = Registry("schedule")

OPTIMIZERS.register("sgd", lambda c, lr: optax.sgd(lr))
OPTIMIZERS.register("momentum", lambda c, lr: optax.sgd(lr, momentum=c.momentum))
OPTIMIZERS.register("nesterov", lambda c, lr: optax.sgd(lr, momentum=c.momentum, nesterov=True))
OPTIMIZERS.register("adam", lambda c, lr: optax.adam(lr, b1=c.b1, b2=c.b2))
OPTIMIZERS.register("adamw", lambda c, lr: optax.adamw(lr, b1=c.b1, b2=c.b2,
                                                       weight_decay=c.weight_decay))
# Optimizers that decay weights themselves (no L2 term added to the gradient).
DECOUPLED_DECAY = ("adamw",)


@SCHEDULES.register("constant")
def _constant(c, lr, steps_per_epoch, total_steps, warmup):
  del c, steps_per_epoch, total_steps, warmup
  return optax.constant_schedule(lr)


@SCHEDULES.register("step")
def _step(c, lr, steps_per_epoch, total_steps, warmup):
  del total_steps
  boundaries = {int(round(e * steps_per_epoch)) - warmup: c.decay_factor for e in c.decay_epochs}
  return optax.piecewise_constant_schedule(lr, boundaries)


@SCHEDULES.register("cosine")
def _cosine(c, lr, steps_per_epoch, total_steps, warmup):
  del c, steps_per_epoch
  return optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))


@SCHEDULES.register("cyclic")
def _cyclic(c, lr, steps_per_epoch, total_steps, warmup):
  """Triangular cycles (Smith 2017): 0 -> lr -> 0 over `cycle_epochs`."""
  del total_steps, warmup
  period = max(int(round(c.cycle_epochs * steps_per_epoch)), 2)
  return lambda step: lr * (1.0 - jnp.abs(2.0 * (step % period) / period - 1.0))


# "follow" is not a registered shape: it copies the default group's (make_schedule).
FOLLOW = "follow"


def make_schedule(c: ml_collections.ConfigDict, *, steps_per_epoch: int,
                  total_steps: int, shape_of: ml_collections.ConfigDict | None = None
                  ) -> optax.Schedule:
  """The learning rate at each step, for one optimizer config `c`.

  Args:
    c: an `optimizer_config()` section. `schedule="follow"` takes the shape
      (warm-up, decay points, cosine, cycles) of `shape_of` scaled to
      `c.learning_rate` (JPEG-DL: the tables follow the backbone's steps).
    steps_per_epoch: optimizer steps per epoch (epoch-valued fields convert with it).
    total_steps: length of the run (cosine decays to 0 at this step).
    shape_of: the config whose shape "follow" copies.

  Returns:
    An optax schedule, step -> learning rate.
  """
  lr = c.learning_rate
  if c.schedule == FOLLOW:
    if shape_of is None or shape_of.schedule == FOLLOW:
      raise ValueError("schedule='follow' needs a schedule to follow")
    base = make_schedule(shape_of, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    ratio = lr / shape_of.learning_rate
    return lambda step: base(step) * ratio
  warmup = int(round(c.warmup_epochs * steps_per_epoch))
  main = SCHEDULES.get(c.schedule)(c, lr, steps_per_epoch, total_steps, warmup)
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_transform(c: ml_collections.ConfigDict, schedule: optax.Schedule
                   ) -> optax.GradientTransformation:
  """One optimizer: clipping, (L2 | decoupled) weight decay, the update rule.

  SGD-family optimizers add `weight_decay * w` to the gradient (PyTorch's SGD
  weight decay); AdamW decays decoupled; Adam with weight decay adds L2 to the
  gradient like PyTorch's Adam.
  """
  parts = []
  if c.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
  if c.weight_decay > 0 and c.name not in DECOUPLED_DECAY:
    parts.append(optax.add_decayed_weights(c.weight_decay))
  parts.append(OPTIMIZERS.get(c.name)(c, schedule))
  return optax.chain(*parts)


def path_of(key_path: tuple[str, ...]) -> str:
  """The "/"-joined path a group regex is matched against."""
  return "/".join(str(k) for k in key_path)


def group_spec(config: ml_collections.ConfigDict, spec: Any) -> ml_collections.ConfigDict | str:
  """The optimizer config a group spec names (a section name or overrides), or "frozen"."""
  if spec == FROZEN:
    return FROZEN
  if isinstance(spec, str):
    if spec not in config or not isinstance(config[spec], ml_collections.ConfigDict) \
        or "learning_rate" not in config[spec]:
      raise ValueError(f"optim_groups: {spec!r} is neither 'frozen' nor an optimizer section "
                       "of the config")
    return config[spec]
  if isinstance(spec, Mapping):
    return config_lib.optimizer_config(**dict(spec))
  raise ValueError(f"optim_groups: a spec must be a section name, a dict or 'frozen', got {spec!r}")


def _group_key(i: int, spec: Any) -> str:
  """The label of group i: its spec's name ("jpeg_optim", "frozen"), or "custom_<i>"."""
  return spec if isinstance(spec, str) else f"custom_{i}"


def group_labels(params: Any, groups: Any) -> Any:
  """A pytree like `params` holding each leaf's group label: "optim" (unmatched: the
  default group) or the label of the first matching `(regex, spec)` pair (`_group_key`).

  Raises:
    ValueError: a malformed pair, a bad regex, or a regex that matches no parameter.
  """
  compiled = []
  for i, pair in enumerate(groups):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise ValueError(f"optim_groups[{i}] must be a (regex, spec) pair, got {pair!r}")
    try:
      compiled.append(re.compile(pair[0]))
    except (re.error, TypeError) as e:
      raise ValueError(f"optim_groups[{i}]: bad regex {pair[0]!r} ({e})") from None
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  used = [False] * len(compiled)
  labels = {}
  for key in flat:
    labels[key] = DEFAULT_GROUP
    for i, pattern in enumerate(compiled):
      if pattern.search(path_of(key)):
        labels[key] = _group_key(i, groups[i][1])
        used[i] = True
        break
  unused = [groups[i][0] for i, u in enumerate(used) if not u]
  if unused:
    raise ValueError(f"optim_groups regex {unused[0]!r} matches no parameter; parameter paths "
                     f"look like {path_of(next(iter(flat)))!r}")
  return flax.traverse_util.unflatten_dict(labels)


def make_optimizer(config: ml_collections.ConfigDict, params: Any, *, steps_per_epoch: int,
                   total_steps: int, gradient_transform: optax.GradientTransformation | None = None,
                   update_transform: optax.GradientTransformation | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The full optimizer over `config.optim_groups`, and the default group's schedule.

  Args:
    config: the experiment config (`optim`, `optim_groups` and the sections they name).
    params: the parameter tree (or its shapes) the groups partition.
    steps_per_epoch: optimizer steps per epoch.
    total_steps: optimizer steps of the whole run.
    gradient_transform: chained before the groups (the task's).
    update_transform: chained after them (the task's).
  """
  kw = dict(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  default_schedule = make_schedule(config.optim, **kw)
  labels = group_labels(params, config.optim_groups)
  transforms = {DEFAULT_GROUP: make_transform(config.optim, default_schedule)}
  for i, (_, spec) in enumerate(config.optim_groups):
    key = _group_key(i, spec)
    c = group_spec(config, spec)
    if c == FROZEN:
      transforms[key] = optax.set_to_zero()
    else:
      transforms[key] = make_transform(c, make_schedule(c, shape_of=config.optim, **kw))
  parts = [t for t in (gradient_transform, optax.multi_transform(transforms, labels),
                       update_transform) if t is not None]
  return optax.chain(*parts), default_schedule
