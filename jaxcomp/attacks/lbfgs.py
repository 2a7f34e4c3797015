"""The box-constrained L-BFGS attack (Szegedy et al. 2014; Sec. 3.3.6 of the thesis).

Per example, minimise `c * CE(F(x'), t) + ||x' - x||_2^2` subject to x' in
[0, 1]^n. The box is enforced by the change of variables `x' = (tanh(w) + 1) / 2`
(as C&W do), which turns the problem into an unconstrained smooth one that
plain L-BFGS solves exactly (optax.lbfgs with its zoom line search, run per
example through `jax.vmap`); L-BFGS-B itself is not available in JAX. c is
chosen by the per-example binary search of `core.binary_search_c` (the paper's
"line search" on c), keeping the successful x' of smallest L2 distance;
examples never successful come back unchanged. Without target labels the
target is the most likely other class at the clean image (success is then
"no longer the label").
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcomp.attacks import budgets, core
from jaxcomp.attacks.carlini_wagner import from_tanh_space, to_tanh_space


def lbfgs(apply_fn: core.ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
          key: jax.Array, *, target_labels: jax.Array | None = None, c_init: float = 1.0,
          binary_search_steps: int = 5, num_steps: int = 100, memory_size: int = 10,
          eps: float | None = None, norm: str = "l2"
          ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L-BFGS attack, jit-compiled and batched.

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]`, or a `core.Stochastic` model
      (its key is held fixed within one minimisation, as a line search needs).
    params: the model's parameters.
    images: [B, H, W, C] float in [0, 1].
    labels: [B] int true labels.
    key: PRNG key (used by randomised models only).
    target_labels: [B] int targets; None = the runner-up class.
    c_init: initial weight of the classification loss (> 0).
    binary_search_steps: outer steps of the search on c.
    num_steps: L-BFGS iterations per value of c.
    memory_size: L-BFGS history length.
    eps: optional budget; only adversarial examples within it are accepted.
    norm: the budget's norm ("l2", "rmse" or "linf").

  Returns:
    (adversarial images in [0, 1], info) as in `jaxcomp.attacks.core`.
  """
  core.validate(images, labels, target_labels=target_labels, eps=eps, norm=norm,
                allow_no_eps=True)
  core.check_positive_int(binary_search_steps=binary_search_steps, num_steps=num_steps,
                          memory_size=memory_size)
  if c_init <= 0:
    raise ValueError(f"c_init must be > 0, got {c_init}")
  eps_, norm_ = budgets.to_l2(eps, norm, images.shape)
  return _lbfgs(apply_fn, params, images, labels, key, target_labels, c_init, eps_, norm=norm_,
                binary_search_steps=binary_search_steps, num_steps=num_steps,
                memory_size=memory_size)


@functools.partial(jax.jit, static_argnames=("apply_fn", "norm", "binary_search_steps",
                                             "num_steps", "memory_size"))
def _lbfgs(apply_fn, params, images, labels, key, target_labels, c_init, eps, *, norm,
           binary_search_steps, num_steps, memory_size):
  f = core.bind(apply_fn, params)
  k0, k_search, k_eval = jax.random.split(key, 3)
  targets = (core.runner_up(f(images, k0), labels) if target_labels is None else target_labels)
  batch = images.shape[0]
  opt = optax.lbfgs(memory_size=memory_size)

  def minimise(x0, t, c, k):  # one example: x0 [H, W, C], t and c scalars
    def objective(w):
      x = from_tanh_space(w)
      return c * core.cross_entropy(f(x[None], k), t[None])[0] + jnp.sum(jnp.square(x - x0))

    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(_, carry):
      w, state = carry
      value, grad = value_and_grad(w, state=state)
      updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=objective)
      return optax.apply_updates(w, updates), state

    w0 = to_tanh_space(x0)
    w, _ = jax.lax.fori_loop(0, num_steps, step, (w0, opt.init(w0)))
    return from_tanh_space(w)

  def search_step(carry, k):
    c, lower, upper, best_l2, best_adv = carry
    k_min, k_check = jax.random.split(k)
    x = jax.vmap(minimise, in_axes=(0, 0, 0, None))(images, targets, c, k_min)
    ok = (core.is_success(f(x, k_check), labels, target_labels)
          & core.within(x - images, eps, norm))
    d = budgets.l2(x - images)
    better = ok & (d < best_l2)
    best_adv = jnp.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), x, best_adv)
    c, lower, upper = core.binary_search_c(c, lower, upper, ok)
    return (c, lower, upper, jnp.where(better, d, best_l2), best_adv), None

  init = (jnp.full(batch, c_init, images.dtype), jnp.zeros(batch, images.dtype),
          jnp.full(batch, 1e10, images.dtype), jnp.full(batch, jnp.inf, images.dtype), images)
  (_, _, _, _, adv), _ = jax.lax.scan(search_step, init,
                                      jax.random.split(k_search, binary_search_steps))
  return core.finish(f, images, adv, labels, target_labels, k_eval)
