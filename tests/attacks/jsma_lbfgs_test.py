"""JSMA (targeted, L0) and L-BFGS (box-constrained) on the trained model."""

from __future__ import annotations

import jax
import numpy as np

from jaxcomp import attacks


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
