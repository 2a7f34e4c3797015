"""Non-negative reparameterisation of GDN's beta and gamma (Ballé et al. 2016, Sec. 3).

A parameter `v >= minimum` is stored as `p` with `v = max(p, sqrt(minimum + ped))**2 - ped`,
`ped = reparam_offset**2`: the square makes the effective learning rate grow
with the value (the paper's remedy for GDN's slow start), the pedestal keeps the
square root differentiable near zero, and the bound (with the gradient-passing
`lower_bound`) keeps `v >= minimum`. Same constants as TFC's
`NonnegativeParameterization` and CompressAI's `NonNegativeParametrizer`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcomp.ops.bounds import lower_bound

REPARAM_OFFSET = 2.0 ** -18


def nonnegative_init(value: jax.Array, *, reparam_offset: float = REPARAM_OFFSET) -> jax.Array:
  """The stored parameter `p = sqrt(max(value + ped, ped))` whose `nonnegative_value` is `value`.

  Args:
    value: the initial value(s), float, >= 0 (e.g. beta = 1, gamma = 0.1 I).
    reparam_offset: the pedestal is its square.

  Returns:
    `p`, same shape and dtype.
  """
  pedestal = reparam_offset ** 2
  return jnp.sqrt(jnp.maximum(value + pedestal, pedestal))


def nonnegative_value(param: jax.Array, *, minimum: float = 0.0,
                      reparam_offset: float = REPARAM_OFFSET) -> jax.Array:
  """The effective value `max(p, sqrt(minimum + ped))**2 - ped`, always `>= minimum`.

  Args:
    param: the stored parameter `p`, float.
    minimum: the lower bound of the value (GDN beta: 1e-6; gamma: 0).
    reparam_offset: the pedestal is its square.

  Returns:
    The value, same shape and dtype as `param`.
  """
  pedestal = reparam_offset ** 2
  bound = (minimum + pedestal) ** 0.5
  return jnp.square(lower_bound(param, bound)) - pedestal
