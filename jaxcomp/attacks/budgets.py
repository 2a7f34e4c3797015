"""Perturbation budgets: norms, projections, steepest-ascent steps, random starts.

Three budgets, all per image over its H * W * C values in [0, 1]:
  * "linf": `max |delta|` (FGSM, BIM, PGD; Ch. 3.3.1-3.3.2 of the thesis);
  * "l2":   `||delta||_2`;
  * "rmse": the theses' normalised L2, `||delta||_2 / sqrt(H W C)` (written
    |L2| in Tables 4.1-4.6; 0.02-0.04 there). An RMSE budget eps is the L2 budget
    `eps * sqrt(H W C)`; attacks convert it with `to_l2` and work in L2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2", "rmse")
_TINY = 1e-12


def check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; known: {NORMS}")


def check_eps(eps: float | None, *, allow_none: bool = False) -> None:
  if eps is None and allow_none:
    return
  if eps is None or not math.isfinite(float(eps)) or float(eps) < 0:
    raise ValueError(f"eps must be a finite number >= 0, got {eps}")


def _sum_axes(x: jax.Array) -> tuple[int, ...]:
  return tuple(range(1, x.ndim))


def l2(delta: jax.Array) -> jax.Array:
  """[B, ...] -> [B] Euclidean norm per example."""
  return jnp.sqrt(jnp.sum(jnp.square(delta), axis=_sum_axes(delta)))


def linf(delta: jax.Array) -> jax.Array:
  """[B, ...] -> [B] largest absolute change per example."""
  return jnp.max(jnp.abs(delta), axis=_sum_axes(delta))


def rmse(delta: jax.Array) -> jax.Array:
  """[B, ...] -> [B] root-mean-square change per example (the theses' |L2|)."""
  return jnp.sqrt(jnp.mean(jnp.square(delta), axis=_sum_axes(delta)))


def norm_of(delta: jax.Array, norm: str) -> jax.Array:
  """[B, ...] -> [B] the `norm` ("linf", "l2", "rmse") of each example."""
  check_norm(norm)
  return {"linf": linf, "l2": l2, "rmse": rmse}[norm](delta)


def to_l2(eps: float | None, norm: str, shape: tuple[int, ...]) -> tuple[float | None, str]:
  """Rewrites an RMSE budget for images of `shape` [B, H, W, C] as an L2 one (None: no budget)."""
  check_norm(norm)
  if eps is None:
    return None, norm
  if norm == "rmse":
    return float(eps) * math.sqrt(math.prod(shape[1:])), "l2"
  return float(eps), norm


def _per_example(v: jax.Array, x: jax.Array) -> jax.Array:
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def project(delta: jax.Array, eps: float | jax.Array, norm: str) -> jax.Array:
  """Euclidean projection of each example's `delta` onto the `norm` ball of radius eps.

  "linf": clip to [-eps, eps]; "l2": scale by `min(1, eps / ||delta||_2)`.
  Use `to_l2` first for an RMSE budget.
  """
  if norm == "linf":
    return jnp.clip(delta, -eps, eps)
  if norm == "l2":
    n = l2(delta)
    return delta * _per_example(jnp.minimum(1.0, eps / jnp.maximum(n, _TINY)), delta)
  raise ValueError(f"project needs 'linf' or 'l2' (convert 'rmse' with to_l2), got {norm!r}")


def steepest_step(grad: jax.Array, norm: str) -> jax.Array:
  """Unit steepest-ascent direction: `sign(g)` for "linf", `g / ||g||_2` for "l2"."""
  if norm == "linf":
    return jnp.sign(grad)
  if norm == "l2":
    return grad / _per_example(jnp.maximum(l2(grad), _TINY), grad)
  raise ValueError(f"steepest_step needs 'linf' or 'l2', got {norm!r}")


def random_start(key: jax.Array, shape: tuple[int, ...], eps: float, norm: str,
                 dtype=jnp.float32) -> jax.Array:
  """A uniform sample of the `norm` ball of radius eps, one per example.

  "linf": U(-eps, eps) per value; "l2": Gaussian direction times `eps u^(1/n)`
  (uniform in the ball of dimension n = H W C).
  """
  if norm == "linf":
    return jax.random.uniform(key, shape, dtype, -eps, eps)
  if norm == "l2":
    kd, kr = jax.random.split(key)
    d = jax.random.normal(kd, shape, dtype)
    n = math.prod(shape[1:])
    r = eps * jax.random.uniform(kr, (shape[0],), dtype) ** (1.0 / n)
    return d * _per_example(r / jnp.maximum(l2(d), _TINY), d)
  raise ValueError(f"random_start needs 'linf' or 'l2', got {norm!r}")
