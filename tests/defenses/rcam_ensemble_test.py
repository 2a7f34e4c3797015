"""R-CAM (Eq. 4.4-4.5), the PD + R-CAM + DWT combination and the Ens-10 vote."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.defenses import (denoise_wavelet, find_head_kernel, majority_vote, pd_rcam_dwt,
                              pixel_deflection, rcam_from_model, robust_cam)


def test_robust_cam_closed_form():
  rng = np.random.default_rng(0)
  f = rng.random((2, 3, 3, 4)).astype(np.float32)
  w = rng.normal(size=(4, 6)).astype(np.float32)
  logits = rng.normal(size=(2, 6)).astype(np.float32)
  got = jax.jit(functools.partial(robust_cam, image_size=(3, 3), top_k=3))(f, w, logits)
  # Eq. 4.4: M_c = f @ w[:, c]; Eq. 4.5: sum_i M_{c_i} / 2^i over the top 3; ReLU; / max.
  for b in range(2):
    top = np.argsort(-logits[b])[:3]
    m = sum(f[b] @ w[:, c] / 2 ** (i + 1) for i, c in enumerate(top))
    m = np.maximum(m, 0)
    np.testing.assert_allclose(got[b], m / m.max(), rtol=1e-5, atol=1e-6)


class _TinyCNN(nn.Module):
  """Conv -> features -> global average pool -> dense "head", as the zoo's models."""

  @nn.compact
  def __call__(self, x):
    feats = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    logits = nn.Dense(5, name="head")(feats.mean(axis=(1, 2)))
    return logits, {"features": feats}


def test_rcam_from_model_and_combined_defense():
  model = _TinyCNN()
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  variables = model.init(jax.random.key(1), x)
  assert find_head_kernel(variables).shape == (8, 5)
  m = jax.jit(lambda v, x: rcam_from_model(model.apply, v, x, top_k=2))(variables, x)
  assert m.shape == (2, 16, 16)
  assert float(m.min()) >= 0.0 and np.allclose(m.max(axis=(1, 2)), 1.0)
  out = jax.jit(lambda x, k, r: pd_rcam_dwt(x, k, rcam=r, deflections=40, window=3))(
      x, jax.random.key(2), m)
  assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert float(jnp.abs(out - x).max()) > 0.0


def test_majority_vote():
  # A "classifier" reading the mean of the first pixel; the defense adds noise
  # whose sign flips the answer in 3 of 10 draws at most: the vote is stable.
  apply_fn = lambda p, x: jnp.stack([x[:, 0, 0, 0], 1.0 - x[:, 0, 0, 0]], axis=-1)
  x = jnp.array([0.9, 0.1]).reshape(2, 1, 1, 1)
  defense = lambda v, k: v + 0.1 * jax.random.normal(k, v.shape)
  vote = jax.jit(lambda x, k: majority_vote(apply_fn, None, x, k, defense=defense,
                                            num_draws=10))
  np.testing.assert_array_equal(vote(x, jax.random.key(0)), [0, 1])
  with pytest.raises(ValueError, match="num_draws"):
    majority_vote(apply_fn, None, x, jax.random.key(0), defense=defense, num_draws=0)


@pytest.mark.parametrize("targeted", [pytest.param(False, marks=pytest.mark.slow), True])
def test_pd_rcam_dwt_does_not_depend_on_the_chunk_size(targeted):
  """Chunks of 1, 2 and all 4 images give the stages' composition on the whole batch."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((4, 24, 24, 3), np.float32))
  rcam = jnp.asarray(rng.random((4, 24, 24), np.float32)) if targeted else None
  key = jax.random.key(5)
  want = jnp.clip(denoise_wavelet(pixel_deflection(x, key, deflections=200, window=2, rcam=rcam),
                                  sigma=0.04), 0.0, 1.0)
  for chunk_bytes in (1, 2 * 24 * 24 * 3 * 4, 10 ** 9):
    got = jax.jit(lambda a, k, r, cb=chunk_bytes: pd_rcam_dwt(
        a, k, rcam=r, deflections=200, window=2, chunk_bytes=cb))(x, key, rcam)
    np.testing.assert_allclose(got, want, atol=2e-6)
