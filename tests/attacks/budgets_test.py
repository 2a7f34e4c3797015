"""Every attack stays inside its budget and the [0, 1] box, and reports its norms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import attacks
from jaxcomp.attacks import budgets

# (attack, keyword arguments, budget norm, budget eps); the iterative ones are short.
CASES = {
    "fgsm_linf": (attacks.fgsm, dict(eps=0.05), "linf", 0.05),
    "fgsm_l2": (attacks.fgsm, dict(eps=0.3, norm="l2"), "l2", 0.3),
    "fgsm_rmse": (attacks.fgsm, dict(eps=0.02, norm="rmse"), "rmse", 0.02),
    "bim_linf": (attacks.bim, dict(eps=0.05, num_steps=5), "linf", 0.05),
    "pgd_linf": (attacks.pgd, dict(eps=0.05, num_steps=5, restarts=2), "linf", 0.05),
    "pgd_l2": (attacks.pgd, dict(eps=0.3, norm="l2", num_steps=5), "l2", 0.3),
    "pgd_rmse_targeted": (attacks.pgd, dict(eps=0.02, norm="rmse", num_steps=5,
                                            target_labels=True), "rmse", 0.02),
    "cw_l2": (attacks.carlini_wagner_l2, dict(eps=0.3, num_steps=30, binary_search_steps=3,
                                              learning_rate=0.05), "l2", 0.3),
    "deepfool_l2": (attacks.deepfool, dict(eps=0.1), "l2", 0.1),
    "jsma_l2": (attacks.jsma, dict(gamma=0.05, eps=0.8), "l2", 0.8),
    "lbfgs_rmse": (attacks.lbfgs, dict(eps=0.05, norm="rmse", num_steps=5,
                                       binary_search_steps=2), "rmse", 0.05),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_attack_respects_budget_and_box(linear_model, name):
  apply_fn, params, x, y = linear_model
  fn, kwargs, norm, eps = CASES[name]
  # Stretch the images so that some values sit on the box edges 0 and 1.
  x = jnp.clip(2.5 * x - 0.75, 0.0, 1.0)
  y = jnp.argmax(apply_fn(params, x), -1).astype(jnp.int32)
  if kwargs.get("target_labels") is True:
    kwargs = kwargs | dict(target_labels=(y + 1) % 5)
  adv, info = fn(apply_fn, params, x, y, jax.random.key(0), **kwargs)
  assert adv.shape == x.shape and adv.dtype == x.dtype
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  delta = adv - x
  # 1e-6 relative: float32 rounding of x + delta.
  assert np.all(np.asarray(budgets.norm_of(delta, norm)) <= eps * (1 + 1e-5) + 1e-7), name
  for n in ("linf", "l2", "rmse"):
    np.testing.assert_allclose(info[n], budgets.norm_of(delta, n), rtol=1e-6, atol=1e-7)
  assert info["success"].shape == y.shape and info["success"].dtype == bool
  if name.startswith("jsma"):  # L0 budget: at most floor(gamma n) values change.
    assert np.all(np.sum(np.asarray(delta) != 0, axis=(1, 2, 3)) <= math.floor(0.05 * 48))


def test_project_and_random_start():
  @jax.jit
  def run(key):
    d = jax.random.normal(key, (16, 4, 4, 3))
    r = budgets.random_start(key, (256, 4, 4, 3), 0.5, "l2")
    return (budgets.l2(budgets.project(d, 0.5, "l2")), budgets.linf(budgets.project(d, 0.1, "linf")),
            budgets.l2(r))

  l2_proj, linf_proj, l2_start = run(jax.random.key(0))
  np.testing.assert_allclose(l2_proj, 0.5, rtol=1e-5)
  assert float(linf_proj.max()) <= np.float32(0.1)
  assert float(l2_start.max()) <= 0.5 + 1e-6
  # Uniform in a 48-dim ball: radius quantiles u^(1/48) -> median radius 0.5 * 0.5^(1/48).
  np.testing.assert_allclose(np.median(l2_start), 0.5 * 0.5 ** (1 / 48), rtol=0.02)
  assert budgets.to_l2(0.02, "rmse", (1, 32, 32, 3)) == pytest.approx((0.02 * math.sqrt(3072), "l2"))
