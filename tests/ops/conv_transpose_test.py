"""jaxcomp.ops.conv_transpose equals lax.conv_transpose(..., "SAME") (flax ConvTranspose)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.ops.conv import NARROW_CHANNELS
from jaxcomp.ops.conv_transpose import conv_transpose

# Output channels of the two forms: narrow (one GEMM + shifted sums) and wide (convolutions).
FORMS = [NARROW_CHANNELS - 1, NARROW_CHANNELS]


@pytest.mark.parametrize("k,s", [(5, 2), (3, 1), (9, 4), (4, 2), (3, 2), (1, 2)])
def test_matches_lax_conv_transpose(k, s):
  # Both forms against one reference: NARROW_CHANNELS outputs (convolutions) and the
  # first NARROW_CHANNELS - 1 of them (the narrow GEMM form).
  kx, kk = jax.random.split(jax.random.key(k * 10 + s))
  x = jax.random.normal(kx, (2, 5, 7, 3))
  kernel = jax.random.normal(kk, (k, k, 3, NARROW_CHANNELS))
  expected = jax.lax.conv_transpose(x, kernel, (s, s), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=jax.lax.Precision.HIGHEST)
  for c_out in FORMS:
    got = jax.jit(conv_transpose, static_argnums=2)(x, kernel[..., :c_out], s)
    assert got.shape == (2, 5 * s, 7 * s, c_out)
    # Same sums in another order, float32: ~1e-6 relative to the O(k) magnitudes.
    np.testing.assert_allclose(got, expected[..., :c_out], atol=2e-5 * k)


@pytest.mark.parametrize("k,s,c_out", [
    (5, 2, FORMS[0]), (5, 2, FORMS[1]),
    pytest.param(3, 1, FORMS[0], marks=pytest.mark.slow),
    pytest.param(3, 1, FORMS[1], marks=pytest.mark.slow)])
def test_gradients_match(k, s, c_out):
  x = jax.random.normal(jax.random.key(0), (2, 4, 5, 2))
  kernel = jax.random.normal(jax.random.key(1), (k, k, 2, c_out))
  ref = lambda x, w: jnp.sum(jnp.sin(jax.lax.conv_transpose(  # noqa: E731
      x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST)))
  ours = lambda x, w: jnp.sum(jnp.sin(conv_transpose(x, w, s)))  # noqa: E731
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
  x, kernel = jnp.zeros((1, 4, 4, 2)), jnp.zeros((k, k, 2, NARROW_CHANNELS))
  hlo = jax.jit(conv_transpose, static_argnums=2).lower(x, kernel, s).as_text()
  assert hlo.count("stablehlo.convolution") == convolutions


@pytest.mark.parametrize("k,s", [(5, 2), (3, 1), (1, 2)])
def test_narrow_outputs_are_one_gemm_in_value_and_gradients(k, s):
  # Fewer than NARROW_CHANNELS output channels (a synthesis transform's RGB layer): one
  # dot to every tap's contribution, no convolution; the input and kernel gradients
  # are one dot each.
  x, kernel = jnp.zeros((1, 4, 4, 2)), jnp.zeros((k, k, 2, NARROW_CHANNELS - 1))
  hlo = jax.jit(conv_transpose, static_argnums=2).lower(x, kernel, s).as_text()
  assert hlo.count("stablehlo.convolution") == 0 and hlo.count("stablehlo.dot_general") == 1
  loss = lambda x, w: jnp.sum(conv_transpose(x, w, s) ** 2)  # noqa: E731
  hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, kernel).as_text()
  assert hlo.count("stablehlo.convolution") == 0 and hlo.count("stablehlo.dot_general") == 3
