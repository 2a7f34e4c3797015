"""Blockwise orthonormal DCT: against scipy, round trip, blocks, padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from jaxcomp.ops import dct


def test_matrix_is_orthonormal_dct_ii():
  d = dct.dct_matrix()
  np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-12)
  # scipy's orthonormal DCT-II of the unit vectors gives the columns of D.
  np.testing.assert_allclose(d, scipy.fft.dct(np.eye(8), norm="ortho", axis=0), atol=1e-12)


def test_dct2_matches_scipy_and_d_x_dt():
  x = np.asarray(jax.random.normal(jax.random.key(0), (5, 8, 8)), np.float64)
  got = jax.jit(dct.dct2)(jnp.asarray(x, jnp.float32))
  d = dct.dct_matrix()
  np.testing.assert_allclose(got, d @ x @ d.T, atol=1e-5)        # float32 sums of 64 terms
  np.testing.assert_allclose(got, scipy.fft.dctn(x, axes=(-2, -1), norm="ortho"), atol=1e-5)


def test_block_dct_round_trip():
  x = jax.random.uniform(jax.random.key(1), (2, 3, 24, 40), minval=-128.0, maxval=128.0)
  coefficients = jax.jit(dct.block_dct)(x)
  assert coefficients.shape == (2, 3, 3, 5, 8, 8)
  back = jax.jit(dct.block_idct)(coefficients)
  # The bound (1e-5) is for unit-range samples; these span 256 units, so
  # the same relative accuracy is 256 * 1e-5.
  np.testing.assert_allclose(back, x, atol=256 * 1e-5)
  unit = x / 256.0
  np.testing.assert_allclose(jax.jit(lambda v: dct.block_idct(dct.block_dct(v)))(unit), unit,
                             atol=1e-5)


def test_blocks_are_8x8_tiles():
  x = jnp.arange(16 * 24, dtype=jnp.float32).reshape(16, 24)
  blocks = dct.blockify(x)
  assert blocks.shape == (2, 3, 8, 8)
  np.testing.assert_array_equal(blocks[1, 2], x[8:16, 16:24])
  np.testing.assert_array_equal(dct.unblockify(blocks), x)
  # A constant block has only a DC coefficient, 8 * value (orthonormal scaling).
  c = dct.block_dct(jnp.full((8, 8), 3.0))
  np.testing.assert_allclose(c[0, 0, 0, 0], 24.0, rtol=1e-6)
  np.testing.assert_allclose(c.reshape(-1)[1:], 0.0, atol=1e-5)


@pytest.mark.parametrize("h,w", [(31, 45), (1, 1), (8, 9)])
def test_odd_sizes_pad_and_crop(h, w):
  x = jax.random.uniform(jax.random.key(2), (2, h, w))
  edge = dct.pad_to_multiple(x, 8)
  assert edge.shape == (2, -(-h // 8) * 8, -(-w // 8) * 8)
  np.testing.assert_array_equal(edge[:, h:, :w], jnp.broadcast_to(x[:, -1:, :], edge[:, h:, :w].shape))
  np.testing.assert_array_equal(edge[:, :h, w:], jnp.broadcast_to(x[:, :, -1:], edge[:, :h, w:].shape))
  zero = dct.pad_to_multiple(x, 16, mode="constant")
  assert zero.shape[1] % 16 == 0 and float(jnp.abs(zero).sum() - jnp.abs(x).sum()) < 1e-4
  back = jax.jit(lambda v: dct.block_idct(dct.block_dct(v)))(edge)[:, :h, :w]
  np.testing.assert_allclose(back, x, atol=1e-5)


def test_errors():
  with pytest.raises(ValueError, match="multiples of 8"):
    dct.blockify(jnp.zeros((9, 8)))
  with pytest.raises(ValueError, match="mode"):
    dct.pad_to_multiple(jnp.zeros((3, 3)), 8, mode="reflect")
