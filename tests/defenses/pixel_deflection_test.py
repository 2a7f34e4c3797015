"""Pixel deflection (Algorithm 2): at most K pixels change, each to a pixel of its window."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcomp.defenses import pixel_deflection
from jaxcomp.defenses.pixel_deflection import deflect, draw, moves


def _images(b=4, h=20, w=15, c=3):
  # Distinct pixel values, so a pixel's new value identifies its source.
  return jnp.asarray(np.random.default_rng(0).random((b, h, w, c)), jnp.float32)


@pytest.mark.parametrize("deflections,window", [(30, 2), (200, 1), (50, 40)])
def test_at_most_k_pixels_from_their_windows(deflections, window):
  x = _images()
  out = jax.jit(functools.partial(pixel_deflection, deflections=deflections, window=window))(
      x, jax.random.key(1))
  x, out = np.asarray(x), np.asarray(out)
  changed = np.any(out != x, axis=-1)
  assert np.all(changed.sum(axis=(1, 2)) <= deflections)
  assert changed.sum() > 0
  h, w = x.shape[1:3]
  whole = window > min(h, w)  # Algorithm 2: then the whole image is the window
  for b, i, j in zip(*np.nonzero(changed)):
    lo_i, hi_i = (0, h) if whole else (max(i - window, 0), min(i + window + 1, h))
    lo_j, hi_j = (0, w) if whole else (max(j - window, 0), min(j + window + 1, w))
    # The value comes from the *original* image inside the clipped window.
    patch = x[b, lo_i:hi_i, lo_j:hi_j].reshape(-1, x.shape[-1])
    assert np.any(np.all(patch == out[b, i, j], axis=-1)), (b, i, j)


def test_rcam_guides_deflection():
  x = _images()
  key = jax.random.key(2)
  deflect = jax.jit(functools.partial(pixel_deflection, deflections=60, window=3))
  run = lambda m: deflect(x, key, rcam=m)
  # R-CAM 1 everywhere: never below U(0, 1), nothing moves.
  np.testing.assert_array_equal(run(jnp.ones(x.shape[:3])), x)
  # R-CAM 0 everywhere: always below U(0, 1) (a.s.), same as untargeted with the same key.
  np.testing.assert_array_equal(run(jnp.zeros(x.shape[:3])), deflect(x, key))
  # Half the image salient: deflections land only in the other half.
  m = jnp.zeros(x.shape[:3]).at[:, :10].set(1.0)
  moved = np.any(np.asarray(run(m)) != np.asarray(x), axis=-1)
  assert not moved[:, :10].any() and moved[:, 10:].any()


def test_sharded_and_independent_per_image():
  x = jnp.tile(_images(b=1), (8, 1, 1, 1))
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  out = jax.jit(functools.partial(pixel_deflection, deflections=50, window=2))(
      xs, jax.random.key(0))
  assert len(out.sharding.device_set) == 8
  out = np.asarray(out)
  assert not np.array_equal(out[0], out[1])  # each image draws its own deflections


def test_bad_input():
  x = _images()
  with pytest.raises(ValueError, match="deflections"):
    pixel_deflection(x, jax.random.key(0), deflections=-1)
  with pytest.raises(ValueError, match="window"):
    pixel_deflection(x, jax.random.key(0), window=1.5)
  with pytest.raises(ValueError, match="rcam"):
    pixel_deflection(x, jax.random.key(0), rcam=jnp.zeros((4, 5, 5)))


@pytest.mark.parametrize("deflections", [10, 17, 40, 300])   # K*K <= H*W = 300 and above it
@pytest.mark.parametrize("targeted", [False, True])
def test_equals_the_sequential_loop_over_the_same_draws(deflections, targeted):
  """Both ways of resolving repeated picks ([K, K] comparison, [H*W] scatter-max) give the
  reference code's loop: attempts in order, each copying from the original image."""
  x = _images()
  b, h, w, c = x.shape
  rcam = jnp.asarray(np.random.default_rng(3).random((b, h, w)), jnp.float32) if targeted else None
  u = draw(jax.random.key(4), b, deflections)
  got = np.asarray(jax.jit(functools.partial(deflect, window=3))(x, u, rcam))
  p, n = (np.asarray(a) for a in moves(u, rcam, height=h, width=w, window=3))
  want = np.asarray(x).reshape(b, h * w, c).copy()
  original = want.copy()
  for i in range(b):
    for k in range(deflections):
      if p[i, k] < h * w:   # h * w: vetoed by R-CAM
        want[i, p[i, k]] = original[i, n[i, k]]
  np.testing.assert_array_equal(got, want.reshape(x.shape))
  assert np.any(np.bincount(p[0], minlength=h * w) > 1) or deflections < 40  # repeats occur
