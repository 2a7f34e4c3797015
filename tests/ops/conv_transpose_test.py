"""jaxcomp.ops.conv_transpose equals lax.conv_transpose(..., "SAME") (flax ConvTranspose)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.ops.conv_transpose import conv_transpose


@pytest.mark.parametrize("k,s", [(5, 2), (3, 1), (9, 4), (4, 2), (3, 2), (1, 2)])
def test_matches_lax_conv_transpose(k, s):
  kx, kk = jax.random.split(jax.random.key(k * 10 + s))
  x = jax.random.normal(kx, (2, 5, 7, 3))
  kernel = jax.random.normal(kk, (k, k, 3, 4))
  expected = jax.lax.conv_transpose(x, kernel, (s, s), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=jax.lax.Precision.HIGHEST)
  got = jax.jit(conv_transpose, static_argnums=2)(x, kernel, s)
  assert got.shape == (2, 5 * s, 7 * s, 4)
  # Same sums in another order, float32: ~1e-6 relative to the O(k) magnitudes.
  np.testing.assert_allclose(got, expected, atol=2e-5 * k)


def test_gradients_match():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 2))
  kernel = jax.random.normal(jax.random.key(1), (5, 5, 2, 3))
  ref = lambda x, w: jnp.sum(jnp.sin(jax.lax.conv_transpose(  # noqa: E731
      x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST)))
  ours = lambda x, w: jnp.sum(jnp.sin(conv_transpose(x, w, 2)))  # noqa: E731
  for a, b in zip(jax.jit(jax.grad(ref, (0, 1)))(x, kernel),
                  jax.jit(jax.grad(ours, (0, 1)))(x, kernel)):
    np.testing.assert_allclose(a, b, atol=1e-4)  # float32 sums of ~25 products


@pytest.mark.parametrize("k,s,convolutions", [(5, 2, 4), (4, 2, 4), (2, 2, 1), (3, 1, 1),
                                               (1, 2, 1)])
def test_one_convolution_per_phase_only_where_phases_differ(k, s, convolutions):
  # 5x5 at stride 2: phases of 3x3, 3x2, 2x3, 2x2 taps, each its own convolution (one
  # convolution would pad them all to 3x3: 36 products for 25); 4x4: 2x2 taps per
  # phase at different offsets (3x3 for one convolution); 2x2 at stride 2 and stride 1:
  # every phase sees every offset, one convolution with s*s*C_out outputs; 1x1 at
  # stride 2: one phase has no tap (zeros, no convolution).
  x, kernel = jnp.zeros((1, 4, 4, 2)), jnp.zeros((k, k, 2, 3))
  hlo = jax.jit(conv_transpose, static_argnums=2).lower(x, kernel, s).as_text()
  assert hlo.count("stablehlo.convolution") == convolutions
