"""The JPEG defense: the hard JPEG round trip of jaxcomp.codecs.jpeg, usable under BPDA."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import attacks
from jaxcomp.defenses import jpeg_defense

codec = pytest.importorskip("jaxcomp.codecs.jpeg")


def test_jpeg_defense_is_the_hard_codec_and_bpda_passes_gradients():
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  defend = jax.jit(functools.partial(jpeg_defense, quality=50))
  out = defend(x, None)
  ref = jnp.clip(codec.jpeg(x, quality=50, quantizer="hard", subsampling="4:2:0"), 0, 1)
  np.testing.assert_allclose(out, ref, atol=1e-6)
  assert float(jnp.abs(out - x).mean()) > 1e-3  # q50 changes a noise image visibly
  straight = attacks.bpda(lambda v, k: jpeg_defense(v, k, quality=50))
  g = jax.jit(jax.grad(lambda v: straight(v, jax.random.key(0)).sum()))(x)
  np.testing.assert_array_equal(g, np.ones(x.shape))
