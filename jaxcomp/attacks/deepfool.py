"""DeepFool (Moosavi-Dezfooli et al. 2016), L2, batched; Sec. 4.2.5 of the thesis.

At the current point x_i, with `f_k = Z_k - Z_y` and `w_k = grad f_k` for the
candidate classes k (the `num_candidates - 1` most likely classes other than y
at the clean image), step to the nearest linearised boundary,

  `l = argmin_k |f_k| / ||w_k||_2`,  `r_i = (|f_l| + 1e-4) / ||w_l||_2^2 * w_l`,

accumulate `r = sum_i r_i` and set `x_{i+1} = clip(x + (1 + overshoot) r, 0, 1)`,
until the label changes or `max_iter` steps. For an affine classifier the first
step is the exact minimal L2 perturbation (times 1 + overshoot). Each step costs
one forward and `num_candidates - 1` backward passes (vmapped).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.attacks import budgets, core


def deepfool(apply_fn: core.ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
             key: jax.Array, *, num_candidates: int = 10, overshoot: float = 0.02,
             max_iter: int = 50, eps: float | None = None, norm: str = "l2"
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Untargeted DeepFool, jit-compiled and batched (finished examples stop moving).

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]`, or a `core.Stochastic` model
      (EOT logits are averaged: the gradients of logit differences are linear).
    params: the model's parameters.
    images: [B, H, W, C] float in [0, 1].
    labels: [B] int classes to move away from (the true or predicted labels).
    key: PRNG key (used by randomised models only).
    num_candidates: classes considered, the label included (10 in the paper).
    overshoot: factor 1 + overshoot on the accumulated step (0.02, SPEC Sec. 8).
    max_iter: iteration cap.
    eps: optional budget; the final perturbation is projected onto it.
    norm: the budget's norm ("l2", "rmse" or "linf").

  Returns:
    (adversarial images in [0, 1], info) as in `jaxcomp.attacks.core`.
  """
  core.validate(images, labels, eps=eps, norm=norm, allow_no_eps=True,
                apply_fn=apply_fn, params=params)
  core.check_positive_int(max_iter=max_iter)
  if num_candidates < 2 or overshoot < 0:
    raise ValueError(f"need num_candidates >= 2 and overshoot >= 0, got {num_candidates}, "
                     f"{overshoot}")
  eps_, norm_ = budgets.to_l2(eps, norm, images.shape)
  return _deepfool(apply_fn, params, images, labels, key, overshoot, eps_, norm=norm_,
                   num_candidates=num_candidates, max_iter=max_iter)


@functools.partial(jax.jit, static_argnames=("apply_fn", "norm", "num_candidates", "max_iter"))
def _deepfool(apply_fn, params, images, labels, key, overshoot, eps, *, norm, num_candidates,
              max_iter):
  f = core.bind(apply_fn, params)
  k0, k_loop, k_eval = jax.random.split(key, 3)
  logits0 = core.mean_logits(f(images, k0))
  num_classes = logits0.shape[-1]
  others = min(num_candidates, num_classes) - 1
  is_label = jax.nn.one_hot(labels, num_classes, dtype=bool)
  cands = jax.lax.top_k(jnp.where(is_label, -jnp.inf, logits0), others)[1]  # [B, others]
  # Cotangents selecting f_k = Z_k - Z_y for each candidate: [others, B, K].
  cot = jnp.moveaxis(jax.nn.one_hot(cands, num_classes) - is_label[:, None, :], 1, 0)
  expand = lambda v: v.reshape(v.shape + (1,) * (images.ndim - 1))

  def point(r):
    return jnp.clip(images + (1.0 + overshoot) * r, 0.0, 1.0)

  def cond(carry):
    i, _, active = carry
    return (i < max_iter) & jnp.any(active)

  def body(carry):
    i, r, active = carry
    logits, vjp = jax.vjp(lambda v: core.mean_logits(f(v, jax.random.fold_in(k_loop, i))),
                          point(r))
    active = active & (jnp.argmax(logits, -1) == labels)
    fk = jnp.einsum("bk,jbk->jb", logits, cot)  # [others, B]
    wk = jax.vmap(lambda ct: vjp(ct)[0])(cot)  # [others, B, H, W, C]
    wn = jax.vmap(budgets.l2)(wk)  # [others, B]
    l = jnp.argmin(jnp.abs(fk) / (wn + 1e-12), axis=0)  # [B]
    pick = lambda v: jnp.take_along_axis(v, l.reshape((1, -1) + (1,) * (v.ndim - 2)), 0)[0]
    w_l, f_l, n_l = pick(wk), pick(fk), pick(wn)
    step = expand((jnp.abs(f_l) + 1e-4) / (n_l ** 2 + 1e-12)) * w_l
    return i + 1, r + jnp.where(expand(active), step, 0.0), active

  active0 = jnp.argmax(logits0, -1) == labels
  _, r, _ = jax.lax.while_loop(cond, body, (0, jnp.zeros_like(images), active0))
  adv = point(r)
  if eps is not None:
    adv = images + budgets.project(adv - images, eps, norm)
  return core.finish(f, images, adv, labels, None, k_eval)
