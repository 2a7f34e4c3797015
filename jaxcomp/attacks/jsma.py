"""Jacobian-based saliency map attack (Papernot et al. 2016), targeted; Sec. 3.3.5.

Single-feature variant, the saliency map exactly as the thesis writes it
(Sec. 3.3.5), on the logits Z and for every input value j (pixel x channel):

  `S(j) = 0` if `dZ_t/dx_j < 0` or `sum_{i != t} dZ_i/dx_j > 0`,
  `S(j) = dZ_t/dx_j * |sum_{i != t} dZ_i/dx_j|` otherwise

(for theta < 0 the signs flip). Each iteration changes the most salient value
by theta (clipped to [0, 1]) and removes it from the search domain, until the
target class wins, no value is salient, or `floor(gamma * H W C)` values have
changed. The pairwise search of the original paper costs O(n^2) memory per
image (9.4 M pairs for 32x32x3), which is why the single-feature map is used.
Without target labels the target is the most likely other class at the clean
image (the thesis's attacks are untargeted; success is then counted as "no
longer the label").
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.attacks import budgets, core


def jsma(apply_fn: core.ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
         key: jax.Array, *, target_labels: jax.Array | None = None, theta: float = 1.0,
         gamma: float = 0.1, eps: float | None = None, norm: str = "l2"
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """JSMA, jit-compiled and batched (finished examples stop changing).

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]`, or a `core.Stochastic` model.
    params: the model's parameters.
    images: [B, H, W, C] float in [0, 1].
    labels: [B] int true labels.
    key: PRNG key (used by randomised models only).
    target_labels: [B] int targets; None = the runner-up class (untargeted use).
    theta: change applied to a selected value (+1: set to white; in (-1, 1] \\ {0}).
    gamma: largest fraction of the H W C values that may change (the L0 budget).
    eps: optional extra budget; the final perturbation is projected onto it.
    norm: that budget's norm ("l2", "rmse" or "linf").

  Returns:
    (adversarial images in [0, 1], info) as in `jaxcomp.attacks.core`.
  """
  core.validate(images, labels, target_labels=target_labels, eps=eps, norm=norm,
                allow_no_eps=True, apply_fn=apply_fn, params=params)
  if theta == 0 or abs(theta) > 1 or not 0 < gamma <= 1:
    raise ValueError(f"need 0 < |theta| <= 1 and 0 < gamma <= 1, got {theta}, {gamma}")
  max_changes = int(math.floor(gamma * math.prod(images.shape[1:])))
  core.check_positive_int(max_changes=max_changes)
  eps_, norm_ = budgets.to_l2(eps, norm, images.shape)
  return _jsma(apply_fn, params, images, labels, key, target_labels, eps_, theta=float(theta),
               norm=norm_, max_changes=max_changes)


@functools.partial(jax.jit, static_argnames=("apply_fn", "theta", "norm", "max_changes"))
def _jsma(apply_fn, params, images, labels, key, target_labels, eps, *, theta, norm,
          max_changes):
  f = core.bind(apply_fn, params)
  k0, k_loop, k_eval = jax.random.split(key, 3)
  logits0 = core.mean_logits(f(images, k0))
  targets = core.runner_up(logits0, labels) if target_labels is None else target_labels
  batch, shape = images.shape[0], images.shape
  num_classes = logits0.shape[-1]
  # Cotangents for grad Z_t and grad sum_i Z_i: [2, B, K].
  cot = jnp.stack([jax.nn.one_hot(targets, num_classes), jnp.ones((batch, num_classes))])

  def cond(carry):
    i, _, _, active = carry
    return (i < max_changes) & jnp.any(active)

  def body(carry):
    i, x, domain, active = carry
    logits, vjp = jax.vjp(lambda v: core.mean_logits(f(v, jax.random.fold_in(k_loop, i))),
                          x.reshape(shape))
    g = jax.vmap(lambda ct: vjp(ct)[0].reshape(batch, -1))(cot)
    g_t, g_o = g[0], g[1] - g[0]
    if theta > 0:
      valid = domain & (g_t > 0) & (g_o < 0)
    else:
      valid = domain & (g_t < 0) & (g_o > 0)
    s = jnp.where(valid, jnp.abs(g_t) * jnp.abs(g_o), -1.0)
    j = jnp.argmax(s, axis=-1)
    active = active & (jnp.argmax(logits, -1) != targets) & (jnp.max(s, axis=-1) > 0)
    change = (jax.nn.one_hot(j, x.shape[-1]) > 0) & active[:, None]
    x = jnp.where(change, jnp.clip(x + theta, 0.0, 1.0), x)
    return i + 1, x, domain & ~change, active

  x0 = images.reshape(batch, -1)
  domain0 = x0 < 1.0 if theta > 0 else x0 > 0.0
  _, x, _, _ = jax.lax.while_loop(cond, body, (0, x0, domain0, jnp.ones(batch, bool)))
  adv = x.reshape(shape)
  if eps is not None:
    adv = images + budgets.project(adv - images, eps, norm)
  return core.finish(f, images, adv, labels, target_labels, k_eval)
