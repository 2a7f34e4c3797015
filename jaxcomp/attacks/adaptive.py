"""Adaptive attacks on input-transformation defenses: BPDA and EOT (Athalye et al. 2018).

A defense is a function `defense(images, key) -> images` (deterministic ones
ignore the key). Composition with any attack goes through the model the attack
receives:

  model = defended(apply_fn, bpda(defense))       # BPDA, identity on the way back
  model = eot(model, num_samples=10)              # + EOT over the defense's randomness
  adv, info = pgd(model, params, x, y, key, eps=8 / 255)

  * `bpda(defense, surrogate)`: forward is the defense, backward is the VJP of
    a differentiable surrogate (default: the identity, i.e. straight-through),
    so non-differentiable defenses (rounding, pixel deflection, thresholds)
    pass gradients;
  * `eot(model, num_samples)`: the model's logits for `num_samples` independent
    draws of its randomness, `[S, B, K]`; every attack averages its loss over
    the draws, so the gradient is the EOT gradient `E_t grad L(f(t(x)))`;
  * `defended(apply_fn, defense)`: `apply_fn(params, defense(images, key))` as
    a `Stochastic` model (the attack supplies a fresh key per forward pass).

The non-adaptive (thesis, Table 4.1) protocol attacks `apply_fn` itself and
evaluates `defended(apply_fn, defense)` on the result.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from jaxcomp.attacks import core

Defense = Callable[[jax.Array, jax.Array], jax.Array]


def _identity(images: jax.Array, key: jax.Array) -> jax.Array:
  del key
  return images


def bpda(defense: Defense, surrogate: Defense | None = None) -> Defense:
  """Backward-pass differentiable approximation of `defense`.

  Args:
    defense: `(images, key) -> images`, possibly non-differentiable.
    surrogate: differentiable `(images, key) -> images` whose VJP replaces the
      defense's (default: identity, the straight-through estimator).

  Returns:
    `(images, key) -> defense(images, key)` whose gradient is the surrogate's,
    evaluated at the same images and key.
  """
  surrogate = _identity if surrogate is None else surrogate

  @jax.custom_vjp
  def approx(images, key):
    return defense(images, key)

  def fwd(images, key):
    return defense(images, key), (images, key)

  def bwd(res, g):
    images, key = res
    _, vjp = jax.vjp(lambda x: surrogate(x, key), images)
    return vjp(g)[0], None

  approx.defvjp(fwd, bwd)
  return approx


def defended(apply_fn: core.ApplyFn, defense: Defense) -> core.Stochastic:
  """The classifier behind the defense: `apply_fn(params, defense(images, key))`."""
  def fn(params: Any, images: jax.Array, key: jax.Array) -> jax.Array:
    k_def, k_model = jax.random.split(key)
    return core.bind(apply_fn, params)(defense(images, k_def), k_model)

  return core.Stochastic(fn)


def eot(model: core.ApplyFn, num_samples: int) -> core.Stochastic:
  """Expectation over transformation: logits [S, B, K] for S independent draws.

  Args:
    model: a `Stochastic` model (e.g. from `defended`) or a deterministic
      `apply_fn` (then all draws coincide).
    num_samples: S, the number of draws per forward pass (vmapped).

  Returns:
    A `Stochastic` model; attacks average their losses over the first axis.
  """
  core.check_positive_int(num_samples=num_samples)

  def fn(params: Any, images: jax.Array, key: jax.Array) -> jax.Array:
    f = core.bind(model, params)
    return jax.vmap(lambda k: f(images, k))(jax.random.split(key, num_samples))

  return core.Stochastic(fn)
