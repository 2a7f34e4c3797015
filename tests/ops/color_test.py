"""JFIF colour conversion: closed-form values, exact inverse, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.ops import color


def test_known_values_match_the_jfif_formulas():
  # SPEC Sec. 1: Y = .299R + .587G + .114B, Cb = 128 - .168736R - .331264G + .5B,
  # Cr = 128 + .5R - .418688G - .081312B (the printed 6-digit constants).
  rgb = jnp.asarray([[255.0, 255.0, 255.0], [255.0, 0.0, 0.0], [0.0, 255.0, 0.0],
                     [0.0, 0.0, 255.0], [10.0, 200.0, 30.0]])
  r, g, b = np.asarray(rgb).T
  expected = np.stack([.299 * r + .587 * g + .114 * b,
                       128 - .168736 * r - .331264 * g + .5 * b,
                       128 + .5 * r - .418688 * g - .081312 * b], -1)
  got = jax.jit(color.rgb_to_ycbcr)(rgb)
  # The printed constants are rounded to 6 digits: 1e-6 * 255 * 3 < 1e-3.
  np.testing.assert_allclose(got, expected, atol=1e-3)
  np.testing.assert_allclose(got[0], [255.0, 128.0, 128.0], atol=1e-4)   # white is neutral


@pytest.mark.parametrize("offset", [128.0, 0.5, 0.0])
def test_round_trip_is_exact(offset):
  x = jax.random.uniform(jax.random.key(0), (4, 5, 6, 3), minval=-128.0, maxval=255.0)
  to = jax.jit(lambda v: color.rgb_to_ycbcr(v, offset=offset))
  back = jax.jit(lambda v: color.ycbcr_to_rgb(v, offset=offset))
  # float32 arithmetic on values up to 255: a few ulps of 255 (~3e-5 each).
  np.testing.assert_allclose(back(to(x)), x, atol=2e-4)


def test_inverse_matrix_is_the_exact_inverse():
  np.testing.assert_allclose(color.YCBCR_TO_RGB @ color.RGB_TO_YCBCR, np.eye(3), atol=1e-12)
  # libjpeg's rounded decoder constants (jdcolor.c) agree to their 5 printed digits.
  np.testing.assert_allclose(color.YCBCR_TO_RGB[:, 1:],
                             [[0.0, 1.402], [-0.34414, -0.71414], [1.772, 0.0]], atol=1e-5)


def test_channel_axis_argument():
  x = jax.random.uniform(jax.random.key(1), (2, 3, 4, 4))
  channels_first = color.rgb_to_ycbcr(x, axis=1)
  channels_last = color.rgb_to_ycbcr(jnp.moveaxis(x, 1, -1))
  np.testing.assert_allclose(jnp.moveaxis(channels_first, 1, -1), channels_last, atol=1e-5)


def test_wrong_channel_count_is_an_error():
  with pytest.raises(ValueError, match="3 channels"):
    color.rgb_to_ycbcr(jnp.zeros((2, 2, 4)))
  with pytest.raises(ValueError, match="3 channels"):
    color.ycbcr_to_rgb(jnp.zeros((2, 2, 1)))
