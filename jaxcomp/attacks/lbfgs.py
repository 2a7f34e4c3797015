"""The box-constrained L-BFGS attack (Szegedy et al. 2014; Sec. 3.3.6 of the thesis).

Per example, minimise `c * CE(F(x'), t) + ||x' - x||_2^2` subject to x' in
[0, 1]^n. The box is enforced by the change of variables `x' = (tanh(w) + 1) / 2`
(as C&W do), which turns the problem into an unconstrained smooth one that
plain L-BFGS solves (L-BFGS-B itself is not available in JAX). The B problems
are independent and solved at once by `minimise_lbfgs`: per-example memory,
two-loop recursion and Armijo backtracking, all batched, so that one step costs
one batched forward + backward pass per line-search trial (a `jax.vmap` of
optax's zoom line search evaluates both branches of its `lax.cond`s and waits
for the slowest example: 20x the cost of a C&W step on CPU). c is
chosen by the per-example binary search of `core.binary_search_c` (the paper's
"line search" on c), keeping the successful x' of smallest L2 distance;
examples never successful come back unchanged. Without target labels the
target is the most likely other class at the clean image (success is then
"no longer the label").
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

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
                allow_no_eps=True, apply_fn=apply_fn, params=params)
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
  w0 = to_tanh_space(images)

  def minimise(c, k):
    def objective(w):  # [B] per-example objectives
      x = from_tanh_space(w)
      dist = jnp.sum(jnp.square(x - images), axis=tuple(range(1, x.ndim)))
      return c * core.cross_entropy(f(x, k), targets) + dist

    return from_tanh_space(minimise_lbfgs(objective, w0, num_steps=num_steps,
                                          memory_size=memory_size))

  def search_step(carry, k):
    c, lower, upper, best_l2, best_adv = carry
    k_min, k_check = jax.random.split(k)
    x = minimise(c, k_min)
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


def minimise_lbfgs(objective: Callable[[jax.Array], jax.Array], w0: jax.Array, *,
                   num_steps: int, memory_size: int = 10, max_backtracks: int = 10,
                   armijo: float = 1e-4, rtol: float = 1e-4) -> jax.Array:
  """Minimise B independent smooth objectives at once with L-BFGS (Nocedal & Wright Alg. 7.5).

  Args:
    objective: `objective(w [B, ...]) -> [B]`, example b's value depending on w[b] only.
    w0: [B, ...] starting points.
    num_steps: L-BFGS iterations.
    memory_size: m, the (s, y) pairs kept per example.
    max_backtracks: line-search trials per iteration; an example that finds no
      decrease within them stays where it is for that iteration.
    armijo: c1 of the sufficient-decrease condition `f(w + t d) <= f(w) + c1 t d.g`.
    rtol: an example stops once `-d.g <= rtol |f(w)|`.

  Returns:
    [B, ...] the final points. Per example: direction `d = -H g` by the
    two-loop recursion with `H0 = (s.y / y.y) I` of the newest pair (the first
    step is `-g / ||g||`), a steepest-descent restart when d is not a descent
    direction, step t = 1, 1/2, 1/4, ... until the Armijo condition holds, and
    the pair stored only when `s.y > 0` (otherwise its slot is left inactive);
    an example whose line search fails restarts with empty memory.
  """
  batch, shape = w0.shape[0], w0.shape
  dot = lambda a, b: jnp.sum(a * b, axis=-1)
  inv_norm = lambda v: 1.0 / (jnp.linalg.norm(v, axis=-1) + 1e-12)

  def value_and_grad(w):
    v, vjp = jax.vjp(lambda u: objective(u.reshape(shape)), w)
    return v, vjp(jnp.ones_like(v))[0]

  def direction(g, mem_s, mem_y, rho, count, gamma):
    def newest_first(i, carry):
      q, alpha = carry
      j = (count - 1 - i) % memory_size
      a = rho[j] * dot(mem_s[j], q)
      return q - a[:, None] * mem_y[j], alpha.at[j].set(a)

    def oldest_first(i, r):
      j = (count - memory_size + i) % memory_size
      return r + (alpha[j] - rho[j] * dot(mem_y[j], r))[:, None] * mem_s[j]

    q, alpha = jax.lax.fori_loop(0, memory_size, newest_first,
                                 (g, jnp.zeros((memory_size, batch), g.dtype)))
    return -jax.lax.fori_loop(0, memory_size, oldest_first, gamma[:, None] * q)

  def step(_, carry):
    w, v, g, mem_s, mem_y, rho, count, gamma = carry
    d = direction(g, mem_s, mem_y, rho, count, gamma)
    slope = dot(d, g)
    steepest = -g * inv_norm(g)[:, None]
    d = jnp.where((slope < 0)[:, None], d, steepest)
    slope = dot(d, g)

    def untried(ls):
      j, _, done, *_ = ls
      return (j < max_backtracks) & ~jnp.all(done)

    def trial(ls):
      j, t, done, w_new, v_new, g_new = ls
      v_t, g_t = value_and_grad(w + t[:, None] * d)
      ok = ~done & jnp.isfinite(v_t) & (v_t <= v + armijo * t * slope)
      w_new = jnp.where(ok[:, None], w + t[:, None] * d, w_new)
      v_new, g_new = jnp.where(ok, v_t, v_new), jnp.where(ok[:, None], g_t, g_new)
      done = done | ok
      return j + 1, jnp.where(done, t, 0.5 * t), done, w_new, v_new, g_new

    # Converged: even the full step would lower f by < rtol |f|, a decrease the
    # float32 noise of a network's f hides; the example stays put (else it uses
    # up every trial, and with the batch all of them, in each later iteration).
    converged = -slope <= rtol * jnp.abs(v)
    _, _, done, w_new, v_new, g_new = jax.lax.while_loop(
        untried, trial, (0, jnp.ones(batch, w.dtype), converged, w, v, g))
    s, y = w_new - w, g_new - g
    sy, yy = dot(s, y), dot(y, y)
    valid = sy > 1e-10
    slot = count % memory_size
    rho = rho.at[slot].set(jnp.where(valid, 1.0 / jnp.where(valid, sy, 1.0), 0.0))
    gamma = jnp.where(valid, sy / jnp.where(valid, yy, 1.0), gamma)
    # No trial decreased f: the curvature model misleads; forget it (restart
    # from a unit-length steepest-descent step).
    rho = jnp.where(done, rho, 0.0)
    gamma = jnp.where(done, gamma, inv_norm(g_new))
    return (w_new, v_new, g_new, mem_s.at[slot].set(s), mem_y.at[slot].set(y), rho,
            count + 1, gamma)

  w = w0.reshape(batch, -1)
  v, g = value_and_grad(w)
  mem = jnp.zeros((memory_size,) + w.shape, w.dtype)
  carry = (w, v, g, mem, mem, jnp.zeros((memory_size, batch), w.dtype), 0, inv_norm(g))
  return jax.lax.fori_loop(0, num_steps, step, carry)[0].reshape(shape)
