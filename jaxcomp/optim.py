"""Optimizers and learning-rate schedules built from config, one per parameter group.

Every parameter leaf carries a group label (the task's `param_labels`):
"default" uses `config.optim`, "jpeg" (the JPEG-DL tables) uses `config.jpeg_optim`,
"aux" (the entropy-bottleneck quantiles of learned codecs) uses Adam at
`config.codec.aux_learning_rate`. `optax.multi_transform` glues them together.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import jax.numpy as jnp
import optax


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
  kind = c.schedule
  if kind == "follow":
    if shape_of is None:
      raise ValueError("schedule='follow' needs the schedule it follows")
    base = make_schedule(shape_of, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    ratio = lr / shape_of.learning_rate
    return lambda step: base(step) * ratio
  warmup = int(round(c.warmup_epochs * steps_per_epoch))
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "step":
    boundaries = {int(round(e * steps_per_epoch)) - warmup: c.decay_factor
                  for e in c.decay_epochs}
    main = optax.piecewise_constant_schedule(lr, boundaries)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  elif kind == "cyclic":
    # Triangular cycles (Smith 2017): 0 -> lr -> 0 over `cycle_epochs`.
    period = max(int(round(c.cycle_epochs * steps_per_epoch)), 2)
    main = lambda step: lr * (1.0 - jnp.abs(2.0 * (step % period) / period - 1.0))
  else:
    raise ValueError(f"unknown schedule {kind!r}")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_transform(c: ml_collections.ConfigDict, schedule: optax.Schedule,
                   *, grad_scale: float = 1.0) -> optax.GradientTransformation:
  """One optimizer: clipping, (L2 | decoupled) weight decay, the update rule.

  SGD-family optimizers add `weight_decay * w` to the gradient (PyTorch's SGD
  weight decay); AdamW decays decoupled; Adam with weight decay adds L2 to the
  gradient like PyTorch's Adam. `grad_scale` multiplies gradients first (LSQ
  step-size gradient scale).
  """
  parts = []
  if grad_scale != 1.0:
    parts.append(optax.scale(grad_scale))
  if c.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
  if c.weight_decay > 0 and c.name != "adamw":
    parts.append(optax.add_decayed_weights(c.weight_decay))
  if c.name == "sgd":
    parts.append(optax.sgd(schedule))
  elif c.name in ("momentum", "nesterov"):
    parts.append(optax.sgd(schedule, momentum=c.momentum, nesterov=c.name == "nesterov"))
  elif c.name == "adam":
    parts.append(optax.adam(schedule, b1=c.b1, b2=c.b2))
  elif c.name == "adamw":
    parts.append(optax.adamw(schedule, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay))
  else:
    raise ValueError(f"unknown optimizer {c.name!r}")
  return optax.chain(*parts)


def make_optimizer(config: ml_collections.ConfigDict, *, steps_per_epoch: int,
                   total_steps: int, labels: Any,
                   lsq_grad_scale: float = 1.0) -> tuple[optax.GradientTransformation,
                                                         optax.Schedule]:
  """The full optimizer over parameter groups, and the default group's schedule.

  Args:
    config: the experiment config (sections `optim`, `jpeg_optim`, `codec`).
    steps_per_epoch: optimizer steps per epoch.
    total_steps: optimizer steps of the whole run.
    labels: pytree of group names shaped like the params.
    lsq_grad_scale: gradient scale applied to the "jpeg" group when
      `jpeg_optim.lsq_grad_scale` is on (LSQ, Esser et al. 2020, Sec. 2.2).
  """
  kw = dict(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  default_schedule = make_schedule(config.optim, **kw)
  transforms = {"default": make_transform(config.optim, default_schedule)}
  jpeg_schedule = make_schedule(config.jpeg_optim, shape_of=config.optim, **kw)
  transforms["jpeg"] = make_transform(
      config.jpeg_optim, jpeg_schedule,
      grad_scale=lsq_grad_scale if config.jpeg_optim.lsq_grad_scale else 1.0)
  transforms["aux"] = optax.adam(config.codec.aux_learning_rate)
  return optax.multi_transform(transforms, labels), default_schedule
