"""Generalized divisive normalization (Ballé, Laparra, Simoncelli 2016, Eq. 6; 2017, Eq. 3).

Classic GDN: `y_i = x_i / sqrt(beta_i + sum_j gamma_ji x_j**2)`; its approximate
inverse IGDN multiplies instead of dividing. The simplified GDN (TFC 2.x default,
Johnston et al. 2019) uses `|x_j|` and no square root. `gdn` is the pure function;
the `GDN` module owns `beta` and `gamma` through the non-negative
reparameterisation of `layers/parametrizers.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.layers.parametrizers import REPARAM_OFFSET, nonnegative_init, nonnegative_value
from jaxcomp.registry import Registry

# A codec's `gdn` field -> the `simplified` flag of `gdn`.
GDN_FORMS: Registry[bool] = Registry("GDN form")
GDN_FORMS.register("classic", False)
GDN_FORMS.register("simplified", True)


def gdn(x: jax.Array, beta: jax.Array, gamma: jax.Array, *, inverse: bool = False,
        simplified: bool = False) -> jax.Array:
  """GDN / IGDN over the last (channel) axis.

  Args:
    x: float array `(..., C)`, channels last (NHWC for images).
    beta: `(C,)`, > 0.
    gamma: `(C, C)`, >= 0; `gamma[j, i]` weighs input channel j in the norm of
      output channel i (the layout of TFC's `x**2 @ gamma`; CompressAI's 1x1
      conv weight is its transpose).
    inverse: IGDN (multiply by the norm) instead of GDN (divide).
    simplified: norm `beta + |x| @ gamma` without square root (TFC 2.x default,
      alpha = epsilon = 1) instead of `sqrt(beta + x**2 @ gamma)` (alpha = 2,
      epsilon = 0.5, the papers' and CompressAI's GDN).

  Returns:
    Same shape and dtype as `x`.
  """
  c = x.shape[-1]
  if beta.shape != (c,) or gamma.shape != (c, c):
    raise ValueError(f"gdn: x has {c} channels but beta is {beta.shape} and gamma "
                     f"{gamma.shape}; expected ({c},) and ({c}, {c})")
  pooled = jnp.abs(x) if simplified else jnp.square(x)
  norm = beta + jnp.einsum("...j,ji->...i", pooled, gamma,
                           precision=jax.lax.Precision.HIGHEST)
  if simplified:
    return x * norm if inverse else x / norm
  return x * jnp.sqrt(norm) if inverse else x * jax.lax.rsqrt(norm)


class GDN(nn.Module):
  """GDN layer (IGDN with `inverse=True`); beta initialised to 1, gamma to `gamma_init` I.

  Parameters are stored reparameterised ("beta", "gamma"); `beta >= beta_min`,
  `gamma >= 0` (Ballé et al. 2016 Sec. 3; TFC / CompressAI defaults).
  """
  inverse: bool = False
  simplified: bool = False
  beta_min: float = 1e-6
  gamma_init: float = 0.1
  reparam_offset: float = REPARAM_OFFSET

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    offset = dict(reparam_offset=self.reparam_offset)
    beta = self.param("beta", lambda _, s: nonnegative_init(jnp.ones(s), **offset), (c,))
    gamma = self.param("gamma", lambda _, s: nonnegative_init(
        self.gamma_init * jnp.eye(s[0]), **offset), (c, c))
    return gdn(x, nonnegative_value(beta, minimum=self.beta_min, **offset),
               nonnegative_value(gamma, **offset), inverse=self.inverse,
               simplified=self.simplified)
