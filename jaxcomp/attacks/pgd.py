"""Projected gradient descent (Madry et al. 2018), L-inf and L2, random start, restarts.

`x_{t+1} = Proj_{x, eps}(x_t + alpha * step(grad_x loss(x_t)))` clipped to the
[0, 1] box, where step is `sign` (L-inf) or `g / ||g||_2` (L2) and Proj is the
projection onto the eps-ball around the clean image (`budgets.project`). The
JPEG-DL protocol's attack (SPEC Sec. 8); with no random start and one restart
it is BIM / IGSM (Eq. 4.2 of the thesis, `fgsm.bim`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.attacks import budgets, core


def pgd(apply_fn: core.ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
        key: jax.Array, *, eps: float, norm: str = "linf", step_size: float | None = None,
        num_steps: int = 20, restarts: int = 1, random_start: bool = True,
        target_labels: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """PGD attack, jit-compiled and batched.

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]`, or a `core.Stochastic` model.
    params: the model's parameters (any pytree).
    images: [B, H, W, C] float in [0, 1].
    labels: [B] int true labels.
    key: PRNG key (random start, randomised models).
    eps: budget radius in `norm` (e.g. 8/255 L-inf; 0.5 L2; 0.02 RMSE).
    norm: "linf", "l2" or "rmse" (an RMSE eps and step are turned into L2 ones).
    step_size: alpha, in the units of `norm`; default `2.5 eps / num_steps` (Madry et al.).
    num_steps: iterations per restart.
    restarts: independent random starts, run together as one batch of
      `restarts * B`; per example the successful one with the highest loss is
      kept (else the highest loss).
    random_start: start from a uniform sample of the eps-ball (else the clean image).
    target_labels: [B] int for a targeted attack (descend the target's cross-entropy).

  Returns:
    (adversarial images [B, H, W, C] in [0, 1], info) as in `jaxcomp.attacks.core`.
  """
  core.validate(images, labels, target_labels=target_labels, eps=eps, norm=norm,
                apply_fn=apply_fn, params=params)
  core.check_positive_int(num_steps=num_steps, restarts=restarts)
  step_size = 2.5 * eps / num_steps if step_size is None else step_size
  budgets.check_eps(step_size)
  eps_, norm_ = budgets.to_l2(eps, norm, images.shape)
  step_, _ = budgets.to_l2(step_size, norm, images.shape)
  return _pgd(apply_fn, params, images, labels, key, target_labels, eps_, step_, norm=norm_,
              num_steps=num_steps, restarts=restarts, random_start=random_start)


@functools.partial(jax.jit, static_argnames=("apply_fn", "norm", "num_steps", "restarts",
                                             "random_start"))
def _pgd(apply_fn, params, images, labels, key, target_labels, eps, step_size, *, norm,
         num_steps, restarts, random_start):
  f = core.bind(apply_fn, params)
  # Restarts run side by side as one batch of `restarts * B` examples.
  x0 = jnp.tile(images, (restarts,) + (1,) * (images.ndim - 1))
  y = jnp.tile(labels, restarts)
  t = None if target_labels is None else jnp.tile(target_labels, restarts)
  loss = core.ascent_loss(f, y, t)
  k_init, k_loop, k_eval, k_final = jax.random.split(key, 4)
  x = x0
  if random_start:
    x = jnp.clip(x0 + budgets.random_start(k_init, x0.shape, eps, norm, x0.dtype), 0.0, 1.0)

  def step(i, x):
    g = core.loss_grad(loss, x, jax.random.fold_in(k_loop, i))
    x = x + step_size * budgets.steepest_step(g, norm)
    return jnp.clip(x0 + budgets.project(x - x0, eps, norm), 0.0, 1.0)

  x = core.fori_loop(num_steps, step, x)
  if restarts == 1:
    adv = x
  else:  # per example: a successful restart with the highest loss, else the highest loss
    succ = core.is_success(f(x, k_eval), y, t).reshape(restarts, -1)
    val = loss(x, k_eval).reshape(restarts, -1)
    best = jnp.argmax(jnp.where(succ, val, -jnp.inf), axis=0)
    best = jnp.where(jnp.any(succ, axis=0), best, jnp.argmax(val, axis=0))
    x = x.reshape((restarts,) + images.shape)
    adv = jnp.take_along_axis(x, best.reshape((1, -1) + (1,) * (images.ndim - 1)), axis=0)[0]
  return core.finish(f, images, adv, labels, target_labels, k_final)
