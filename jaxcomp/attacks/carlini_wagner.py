"""Carlini & Wagner's L2 attack (Carlini & Wagner 2017; Eq. 4.3 of the thesis).

Per example, minimise over w

  `||x'(w) - x||_2^2 + c * max(Z_y(x') - max_{k != y} Z_k(x'), -kappa)`,
  `x'(w) = (tanh(w) + 1) / 2`   (the tanh box: x' is in [0, 1] for every w),

(targeted: `max(max_{k != t} Z_k - Z_t, -kappa)`) with Adam, for a sequence of
c chosen by a per-example binary search (`core.binary_search_c`), keeping the
successful x' of smallest L2 distance seen at any iteration. Success means the
margin condition holds: `max_{k != y} Z_k > Z_y + kappa` (untargeted) or
`Z_t > max_{k != t} Z_k + kappa` (targeted). Examples never successful come
back unchanged. Defaults are the paper's (9 search steps, c0 = 1e-3, lr 1e-2,
kappa 0) with 1,000 instead of 10,000 iterations.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcomp.attacks import budgets, core


def carlini_wagner_l2(apply_fn: core.ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
                      key: jax.Array, *, target_labels: jax.Array | None = None,
                      kappa: float = 0.0, c_init: float = 1e-3, binary_search_steps: int = 9,
                      num_steps: int = 1000, learning_rate: float = 1e-2,
                      eps: float | None = None, norm: str = "l2"
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """C&W L2 attack, jit-compiled and batched (the binary search runs per example).

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]`, or a `core.Stochastic` model.
    params: the model's parameters.
    images: [B, H, W, C] float in [0, 1].
    labels: [B] int true labels.
    key: PRNG key (used by randomised models only).
    target_labels: [B] int for the targeted attack.
    kappa: confidence margin (>= 0).
    c_init: initial trade-off constant c (> 0).
    binary_search_steps: outer steps of the search on c.
    num_steps: Adam iterations per value of c.
    learning_rate: Adam step size in tanh space.
    eps: optional budget; only adversarial examples within it are accepted.
    norm: the budget's norm ("l2", "rmse" or "linf").

  Returns:
    (adversarial images in [0, 1], info) as in `jaxcomp.attacks.core`.
  """
  core.validate(images, labels, target_labels=target_labels, eps=eps, norm=norm,
                allow_no_eps=True, apply_fn=apply_fn, params=params)
  core.check_positive_int(binary_search_steps=binary_search_steps, num_steps=num_steps)
  if kappa < 0 or c_init <= 0 or learning_rate <= 0:
    raise ValueError(f"need kappa >= 0, c_init > 0, learning_rate > 0; got {kappa}, {c_init}, "
                     f"{learning_rate}")
  eps_, norm_ = budgets.to_l2(eps, norm, images.shape)
  return _cw(apply_fn, params, images, labels, key, target_labels, kappa, c_init, learning_rate,
             eps_, norm=norm_, binary_search_steps=binary_search_steps, num_steps=num_steps)


def to_tanh_space(images: jax.Array) -> jax.Array:
  """`w` with `(tanh(w) + 1) / 2 = images` (shrunk by 1e-6 to keep arctanh finite)."""
  return jnp.arctanh((2.0 * images - 1.0) * (1.0 - 1e-6))


def from_tanh_space(w: jax.Array) -> jax.Array:
  return (jnp.tanh(w) + 1.0) / 2.0


@functools.partial(jax.jit, static_argnames=("apply_fn", "norm", "binary_search_steps",
                                             "num_steps"))
def _cw(apply_fn, params, images, labels, key, target_labels, kappa, c_init, learning_rate, eps,
        *, norm, binary_search_steps, num_steps):
  f = core.bind(apply_fn, params)
  targeted = target_labels is not None
  cls = target_labels if targeted else labels
  sign = -1.0 if targeted else 1.0  # f = max(sign * margin(cls), -kappa)
  batch = images.shape[0]
  w0 = to_tanh_space(images)
  opt = optax.adam(learning_rate)

  def objective(w, c, k):
    x = from_tanh_space(w)
    logits = f(x, k)
    fl = core.mean_draws(jnp.maximum(sign * core.margin(logits, cls), -kappa), logits)
    dist = jnp.sum(jnp.square(x - images), axis=tuple(range(1, x.ndim)))
    return jnp.sum(dist + c * fl), (x, logits)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def search_step(carry, k):
    c, lower, upper, best_l2, best_adv = carry

    def iterate(i, inner):
      w, opt_state, best_l2, best_adv, found = inner
      (_, (x, logits)), g = grad_fn(w, c, jax.random.fold_in(k, i))
      m = sign * core.margin(core.mean_logits(logits), cls)
      ok = (m < -kappa) & core.within(x - images, eps, norm)
      d = budgets.l2(x - images)
      better = ok & (d < best_l2)
      best_adv = jnp.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), x, best_adv)
      best_l2 = jnp.where(better, d, best_l2)
      updates, opt_state = opt.update(g, opt_state, w)
      return optax.apply_updates(w, updates), opt_state, best_l2, best_adv, found | ok

    inner = (w0, opt.init(w0), best_l2, best_adv, jnp.zeros(batch, bool))
    _, _, best_l2, best_adv, found = jax.lax.fori_loop(0, num_steps, iterate, inner)
    c, lower, upper = core.binary_search_c(c, lower, upper, found)
    return (c, lower, upper, best_l2, best_adv), None

  k_search, k_eval = jax.random.split(key)
  init = (jnp.full(batch, c_init, images.dtype), jnp.zeros(batch, images.dtype),
          jnp.full(batch, 1e10, images.dtype), jnp.full(batch, jnp.inf, images.dtype), images)
  (_, _, _, _, adv), _ = jax.lax.scan(search_step, init,
                                      jax.random.split(k_search, binary_search_steps))
  return core.finish(f, images, adv, labels, target_labels, k_eval)
