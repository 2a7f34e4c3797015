"""JSMA (targeted, L0) and L-BFGS (box-constrained) on the trained model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import attacks
from jaxcomp.attacks.lbfgs import minimise_lbfgs


def test_jsma_targeted(fashion_mlp):
  m = fashion_mlp
  x, y = m.images[:16], m.labels[:16]
  t = (y + 5) % 10
  adv, info = attacks.jsma(m.apply_fn, m.params, x, y, jax.random.key(0), target_labels=t,
                           gamma=0.2)
  pred = np.asarray(np.argmax(m.apply_fn(m.params, adv), -1))
  np.testing.assert_array_equal(info["success"], pred == np.asarray(t))
  assert np.mean(info["success"]) >= 0.75
  changed = np.asarray(adv != x)
  assert np.all(changed.sum(axis=(1, 2, 3)) <= int(0.2 * 784))
  assert np.all(np.asarray(adv)[changed] == 1.0)  # theta = +1 sets a value to white


def test_lbfgs_targeted(fashion_mlp):
  # (The untargeted variant runs in budgets_test.py.)
  m = fashion_mlp
  x, y = m.images[:16], m.labels[:16]
  t = (y + 1) % 10
  adv, info = attacks.lbfgs(m.apply_fn, m.params, x, y, jax.random.key(0), target_labels=t,
                            num_steps=15, binary_search_steps=4)
  pred = np.asarray(np.argmax(m.apply_fn(m.params, adv), -1))
  np.testing.assert_array_equal(info["success"], pred == np.asarray(t))
  assert np.mean(info["success"]) >= 0.75
  assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
  # Successful examples moved, failed ones came back unchanged.
  moved = np.asarray(info["l2"]) > 0
  np.testing.assert_array_equal(moved, np.asarray(info["success"]))


def test_minimise_lbfgs_solves_independent_problems():
  # B = 3 Rosenbrock functions with minima at (a, a^2), a = 1, -0.5, 2, plus one
  # ill-conditioned quadratic with minimum at (3, -1): the batched solver reaches
  # each example's own minimiser (1e-4: float32 at the end of the valley).
  a = jnp.array([1.0, -0.5, 2.0])

  def objective(w):  # [4, 2] -> [4]
    x, y = w[:, 0], w[:, 1]
    rosen = (jnp.concatenate([a, jnp.zeros(1)]) - x) ** 2 + 10.0 * (y - x ** 2) ** 2
    quad = 100.0 * (x - 3.0) ** 2 + 0.1 * (y + 1.0) ** 2
    return jnp.where(jnp.arange(4) < 3, rosen, quad)

  w = jax.jit(lambda w0: minimise_lbfgs(objective, w0, num_steps=200))(
      jnp.zeros((4, 2)))
  want = np.array([[1.0, 1.0], [-0.5, 0.25], [2.0, 4.0], [3.0, -1.0]])
  np.testing.assert_allclose(w, want, atol=1e-4)
