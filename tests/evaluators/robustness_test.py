"""The robustness table: cells, destruction rates and the adaptive column."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import attacks
from jaxcomp.evaluators.robustness import destruction_rate, evaluate, format_table


def test_destruction_rate_formula():
  # Ch. 3.7: among clean-correct & attacked-wrong (indices 0, 1, 2), T restores 0 and 2.
  c = [1, 1, 1, 1, 0]
  a = [0, 0, 0, 1, 0]
  t = [1, 0, 1, 0, 1]
  assert destruction_rate(c, a, t) == 2 / 3
  assert np.isnan(destruction_rate(c, [1] * 5, t))


def test_evaluate_table():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(48, 4)), jnp.float32)
  apply_fn = lambda p, x: x.reshape(x.shape[0], -1) @ p
  x = jnp.asarray(rng.uniform(0.3, 0.7, (16, 4, 4, 3)), jnp.float32)
  y = jnp.argmax(apply_fn(w, x), -1).astype(jnp.int32)
  batches = [(x[:8], y[:8]), (x[8:], y[8:])]
  quantise = lambda v, k: jnp.round(v * 8) / 8  # zero gradient: masks naive attacks
  records = evaluate(apply_fn, w, batches,
                     attacks={"fgsm": functools.partial(attacks.fgsm, eps=0.1)},
                     defenses={"quant": quantise}, key=jax.random.key(0), eot_samples=2)
  cells = {(r.attack, r.defense, r.adaptive): r for r in records}
  assert set(cells) == {("clean", "none", False), ("clean", "quant", False),
                        ("fgsm", "none", False), ("fgsm", "quant", False), ("fgsm", "quant", True)}
  assert cells["clean", "none", False].accuracy == 1.0  # labels are the model's predictions
  assert all(r.count == 16 for r in records)
  # Recompute the non-adaptive cell by hand.
  adv = jnp.concatenate([attacks.fgsm(apply_fn, w, bx, by, jax.random.fold_in(
      jax.random.fold_in(jax.random.key(0), b), 100), eps=0.1)[0]
      for b, (bx, by) in enumerate(batches)])
  attacked = np.asarray(jnp.argmax(apply_fn(w, adv), -1) == y)
  defended = np.asarray(jnp.argmax(apply_fn(w, quantise(adv, None)), -1) == y)
  r = cells["fgsm", "quant", False]
  assert r.accuracy == defended.mean()
  assert r.destruction_rate == destruction_rate(np.ones(16), attacked, defended) or (
      np.isnan(r.destruction_rate) and attacked.all())
  assert cells["fgsm", "none", False].accuracy == attacked.mean()
  # BPDA through the rounding recovers the attack: no better for the defense.
  assert cells["fgsm", "quant", True].accuracy <= r.accuracy
  table = format_table(records)
  assert table.count("\n") == len(records) + 1 and "BPDA+EOT" in table
