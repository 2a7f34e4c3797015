"""Tests of jaxcomp.entropy.factorized (Balle 2018 App. 6.1; CompressAI EntropyBottleneck).

Model inits use rbg keys: XLA compiles threefry (the default) ~7x slower on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp.entropy import factorized
from jaxcomp.entropy.factorized import EntropyBottleneck

C = 4


def _init(key=0, perturb=0.0):
  """Bottleneck variables; `perturb` adds N(0, perturb) to every density parameter."""
  module = EntropyBottleneck(channels=C)
  variables = jax.jit(lambda k: module.init(k, jnp.zeros((1, 2, 2, C)), mode="dequantize"))(
      jax.random.key(key, impl="rbg"))
  params = dict(variables["params"])
  if perturb:
    params = jax.jit(lambda params, keys: {
        name: v if name == "quantiles" else v + perturb * jax.random.normal(keys[i], v.shape)
        for i, (name, v) in enumerate(sorted(params.items()))})(
            params, jax.random.split(jax.random.key(key + 1), len(params)))
  return module, params


@pytest.mark.parametrize("perturb", [0.0, 2.0])
def test_cdf_monotone_and_in_unit_interval(perturb):
  _, params = _init(perturb=perturb)
  density, _ = factorized.density_from_params(params)
  grid = jnp.broadcast_to(jnp.linspace(-60.0, 60.0, 2001), (C, 1, 2001))
  cdf = np.asarray(jax.jit(lambda x: jax.nn.sigmoid(factorized.logits_cumulative(x, density)))(grid))
  assert np.all((cdf >= 0) & (cdf <= 1))
  assert np.all(np.diff(cdf, axis=-1) >= 0)  # softplus(H) > 0 and tanh(a) > -1 => monotone


@pytest.mark.parametrize("perturb", [0.0, 1.0])
def test_likelihoods_sum_to_one_over_integers(perturb):
  _, params = _init(perturb=perturb)
  density, _ = factorized.density_from_params(params)
  y = jnp.broadcast_to(jnp.arange(-3000.0, 3001.0)[:, None], (6001, C))
  total = jax.jit(factorized.likelihood)(y, density).sum(axis=0)
  # The bins telescope to c(3000.5) - c(-3000.5) ~ 1; float32 error ~6e-8 per bin over
  # the few hundred bins that carry mass, plus 6000 * 1e-9 from the likelihood bound.
  np.testing.assert_allclose(total, 1.0, atol=2e-4)


def test_quantization_modes():
  module, params = _init()
  params["quantiles"] = params["quantiles"].at[:, 0, 1].set(jnp.asarray([0.3, -0.2, 0.0, 0.45]))
  y = jax.random.normal(jax.random.key(3), (2, 8, 8, C)) * 4
  med = params["quantiles"][:, 0, 1]
  apply = jax.jit(lambda y, mode, key: module.apply({"params": params}, y, mode=mode, key=key),
                  static_argnums=1)
  y_deq, p_deq = apply(y, "dequantize", None)
  np.testing.assert_allclose(y_deq, jnp.round(y - med) + med, atol=1e-6)  # definition
  y_noise, _ = apply(y, "noise", jax.random.key(4))
  assert np.all(np.abs(y_noise - y) <= 0.5) and not np.allclose(y_noise, y_deq)
  y_ste, p_ste = apply(y, "ste", None)
  np.testing.assert_allclose(y_ste, y_deq, atol=1e-6)
  np.testing.assert_allclose(p_ste, p_deq, rtol=1e-6)
  g = jax.jit(jax.grad(lambda y: module.apply({"params": params}, y, mode="ste")[0].sum()))(y)
  np.testing.assert_array_equal(g, 1.0)  # straight-through: identity gradient


def test_aux_loss_fits_medians_and_tails():
  module, params = _init(perturb=0.5)
  density, _ = factorized.density_from_params(params)
  # L1 loss: a large step to reach the far tails (|q| ~ 150 here), then decay to settle.
  opt = optax.adam(optax.exponential_decay(2.0, 60, 0.5, transition_begin=150))
  q = params["quantiles"]
  state = opt.init(q)

  @jax.jit
  def step(q, state):
    loss, g = jax.value_and_grad(factorized.aux_loss)(q, density)
    updates, state = opt.update(g, state)
    return optax.apply_updates(q, updates), state, loss

  for _ in range(800):
    q, state, loss = step(q, state)
  logits = factorized.logits_cumulative(q, density)[:, 0, :]
  # Targets (CompressAI): logits -t, 0, t with t = log(2/1e-9 - 1), i.e. CDF 5e-10, 1/2,
  # 1 - 5e-10. 1e-2 in logits is 0.25 % of the median's CDF (slope 1/4).
  t = np.log(2 / 1e-9 - 1)
  np.testing.assert_allclose(logits, np.broadcast_to([-t, 0, t], (C, 3)), atol=1e-2)
  np.testing.assert_allclose(factorized.medians(q), q[:, 0, 1])
  # The density parameters get no gradient from the auxiliary loss.
  g = jax.grad(lambda d: factorized.aux_loss(q, d))(density)
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g))


def test_pmf_table_covers_the_mass():
  _, params = _init(perturb=0.5)
  density, quantiles = factorized.density_from_params(params)
  pmf, tail, offsets, lengths = factorized.pmf_table(density, quantiles)
  np.testing.assert_array_equal(lengths, 21)  # quantiles at init: (-10, 0, 10)
  np.testing.assert_array_equal(offsets, -10)
  total = np.asarray([pmf[c, :lengths[c]].sum() for c in range(C)]) + tail
  np.testing.assert_allclose(total, 1.0, atol=1e-5)  # float32 pmf entries, 21 bins


def test_fit_quantiles_solves_the_aux_loss():
  _, params = _init(perturb=0.5)
  density, _ = factorized.density_from_params(params)
  q = factorized.fit_quantiles(density)
  logits = factorized.logits_cumulative(q, density)[:, 0, :]
  t = np.log(2 / 1e-9 - 1)
  # 64 bisection steps reach float32 resolution of q; the logit slope is << 1e3 there.
  np.testing.assert_allclose(logits, np.broadcast_to([-t, 0, t], (C, 3)), atol=1e-3)
