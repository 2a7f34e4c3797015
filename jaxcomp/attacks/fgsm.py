"""FGSM / Gradient Attack (one step) and BIM / IGSM (iterated, projected).

FGSM (Goodfellow et al. 2015; Eq. 4.1 of the thesis): `x' = x + eps sign(grad)`.
With `norm="l2"` (or "rmse") the single step follows the normalised gradient,
`x' = x + eps g / ||g||_2`: the thesis's Gradient Attack (GA, Sec. 3.3.3).
BIM / IGSM (Kurakin et al. 2016; Eq. 4.2): FGSM steps of size alpha from the
clean image, each projected back onto the eps-ball; PGD without random start.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from jaxcomp.attacks import budgets, core
from jaxcomp.attacks.pgd import pgd


def fgsm(apply_fn: core.ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
         key: jax.Array, *, eps: float, norm: str = "linf",
         target_labels: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """One gradient step of size eps (FGSM for "linf", GA for "l2" / "rmse").

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]`, or a `core.Stochastic` model.
    params: the model's parameters.
    images: [B, H, W, C] float in [0, 1].
    labels: [B] int true labels.
    key: PRNG key (used by randomised models only).
    eps: step length in `norm`.
    norm: "linf", "l2" or "rmse".
    target_labels: [B] int for the targeted variant (step down the target's loss).

  Returns:
    (adversarial images clipped to [0, 1], info) as in `jaxcomp.attacks.core`.
  """
  core.validate(images, labels, target_labels=target_labels, eps=eps, norm=norm,
                apply_fn=apply_fn, params=params)
  eps_, norm_ = budgets.to_l2(eps, norm, images.shape)
  return _fgsm(apply_fn, params, images, labels, key, target_labels, eps_, norm=norm_)


@functools.partial(jax.jit, static_argnames=("apply_fn", "norm"))
def _fgsm(apply_fn, params, images, labels, key, target_labels, eps, *, norm):
  f = core.bind(apply_fn, params)
  k_grad, k_eval = jax.random.split(key)
  g = core.loss_grad(core.ascent_loss(f, labels, target_labels), images, k_grad)
  adv = images + eps * budgets.steepest_step(g, norm)
  return core.finish(f, images, adv, labels, target_labels, k_eval)


def bim(apply_fn: core.ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
        key: jax.Array, *, eps: float, norm: str = "linf", step_size: float | None = None,
        num_steps: int = 10, target_labels: jax.Array | None = None
        ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """BIM / IGSM: `pgd(..., random_start=False, restarts=1)`; see `pgd` for the arguments."""
  return pgd(apply_fn, params, images, labels, key, eps=eps, norm=norm, step_size=step_size,
             num_steps=num_steps, restarts=1, random_start=False, target_labels=target_labels)
