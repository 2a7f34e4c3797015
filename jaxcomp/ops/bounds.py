"""Bounds whose gradients still push values back into range.

`lower_bound(x, b)` is `max(x, b)` in the forward pass. A plain `max` has zero
gradient where `x < b`, so a parameter that falls below its bound can never
return (the "dead GDN" failure). As in tensorflow-compression
(`ops/bound_ops.py`) and CompressAI (`ops/bound_ops.py`, `LowerBound`), the
backward pass lets the gradient through where `x >= b` *or* where the gradient
is negative, i.e. where gradient descent (`x -= lr * g`) would move `x` up,
back into range.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _lower_bound(x: jax.Array, bound: jax.Array) -> jax.Array:
  return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
  return jnp.maximum(x, bound), (x, bound)


def _lower_bound_bwd(res, g):
  x, bound = res
  pass_through = (x >= bound) | (g < 0)
  return jnp.where(pass_through, g, 0).astype(g.dtype), jnp.zeros_like(bound)


_lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


def lower_bound(x: jax.Array, bound: float | jax.Array) -> jax.Array:
  """`max(x, bound)` with the gradient passed where it pushes `x` up into range.

  Args:
    x: any float array.
    bound: a scalar (or an array broadcastable to `x`) of the same float dtype.

  Returns:
    `max(x, bound)`, shape and dtype of `x`. Backward: `g` where
    `x >= bound or g < 0`, else 0 (TFC `lower_bound`, gradient "identity_if_towards").
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"lower_bound needs a float array, got dtype {x.dtype}")
  bound = jnp.broadcast_to(jnp.asarray(bound, x.dtype), x.shape)
  return _lower_bound(x, bound)
