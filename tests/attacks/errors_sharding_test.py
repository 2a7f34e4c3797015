"""Attacks under an outer jit, on 8 sharded devices, and their input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcomp import attacks


def test_sharded_batch_under_outer_jit(linear_model):
  apply_fn, params, x, y = linear_model
  x, y = jnp.concatenate([x, x[:2]]), jnp.concatenate([y, y[:2]])  # 8 examples
  mesh = Mesh(np.asarray(jax.devices()), ("data",))  # 8 fake CPU devices (conftest)
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  ys = jax.device_put(y, NamedSharding(mesh, P("data")))

  @jax.jit
  def run(x, y):  # the value checks are skipped on tracers; shapes are still checked
    return attacks.pgd(apply_fn, params, x, y, jax.random.key(0), eps=0.05, num_steps=3,
                       random_start=False)

  adv, info = run(xs, ys)
  ref, _ = attacks.pgd(apply_fn, params, x, y, jax.random.key(0), eps=0.05, num_steps=3,
                       random_start=False)
  assert len(adv.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(adv), np.asarray(ref), atol=1e-6)
  assert info["success"].shape == (8,)


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1), "eps must be"),
    (dict(eps=float("nan")), "eps must be"),
    (dict(eps=0.1, norm="l1"), "unknown norm"),
    (dict(eps=0.1, num_steps=0), "num_steps"),
])
def test_bad_budget(linear_model, kwargs, match):
  apply_fn, params, x, y = linear_model
  with pytest.raises(ValueError, match=match):
    attacks.pgd(apply_fn, params, x, y, jax.random.key(0), **kwargs)


def test_bad_images_and_labels(linear_model):
  apply_fn, params, x, y = linear_model
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    attacks.fgsm(apply_fn, params, x[0], y, key, eps=0.1)
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    attacks.fgsm(apply_fn, params, x * 255, y, key, eps=0.1)
  with pytest.raises(ValueError, match="floating point"):
    attacks.fgsm(apply_fn, params, (x * 255).astype(jnp.uint8), y, key, eps=0.1)
  with pytest.raises(ValueError, match="labels must be integers"):
    attacks.fgsm(apply_fn, params, x, y[:3], key, eps=0.1)
  with pytest.raises(ValueError, match="labels must be integers"):
    attacks.fgsm(apply_fn, params, x, y.astype(jnp.float32), key, eps=0.1)
  with pytest.raises(ValueError, match="target_labels"):
    attacks.pgd(apply_fn, params, x, y, key, eps=0.1, target_labels=y[:2])
  with pytest.raises(ValueError, match="kappa"):
    attacks.carlini_wagner_l2(apply_fn, params, x, y, key, kappa=-1.0)
  with pytest.raises(ValueError, match="num_candidates"):
    attacks.deepfool(apply_fn, params, x, y, key, num_candidates=1)
  with pytest.raises(ValueError, match="theta"):
    attacks.jsma(apply_fn, params, x, y, key, theta=0.0)
  with pytest.raises(ValueError, match="num_samples"):
    attacks.eot(apply_fn, 0)
