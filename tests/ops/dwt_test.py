"""jaxcomp.ops.dwt against PyWavelets (the reference named in SPEC Sec. 9)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import pywt

from jaxcomp.ops import dwt

# Float32 arithmetic against pywt's float64: coefficients of [0, 1] data grow by
# at most 2x per level (orthonormal filters), so a few float32 ulps of 2^levels
# bound the error; 1e-5 leaves a wide margin.
ATOL = 1e-5


# Even and odd sizes, the default level, and levels deep enough for boundary effects.
@pytest.mark.parametrize("wavelet,shape,level", [("db1", (32, 32), None), ("haar", (17, 23), 2),
                                                 ("db2", (17, 23), 2), ("db4", (5, 9), 1),
                                                 ("sym3", (64, 48), 3)])
def test_wavedec2_and_waverec2_match_pywt(wavelet, shape, level):
  x = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
  ref = pywt.wavedec2(x.astype(np.float64), wavelet, mode="symmetric", level=level, axes=(-2, -1))
  got = jax.jit(lambda v: dwt.wavedec2(v, wavelet, level=level))(x)
  assert len(got) == len(ref)
  np.testing.assert_allclose(got[0], ref[0], atol=ATOL)
  for g, r in zip(got[1:], ref[1:]):
    for gb, rb in zip(g, r):  # (cH, cV, cD)
      np.testing.assert_allclose(gb, rb, atol=ATOL)
  rec = jax.jit(lambda c: dwt.waverec2(c, wavelet))(got)
  np.testing.assert_allclose(rec, pywt.waverec2(ref, wavelet, mode="symmetric", axes=(-2, -1)),
                             atol=ATOL)


def test_perfect_reconstruction_on_other_axes():
  # Orthogonal wavelets reconstruct exactly: waverec2(wavedec2(x)) == x.
  x = np.random.default_rng(1).random((3, 16, 24, 2)).astype(np.float32)
  rec = jax.jit(lambda v: dwt.waverec2(dwt.wavedec2(v, "db2", level=2, axes=(1, 2)), "db2",
                                       axes=(1, 2)))(x)
  np.testing.assert_allclose(rec, x, atol=ATOL)


def test_dwt_max_level_matches_pywt():
  for wavelet in ("db1", "db2", "sym5"):
    for n in (1, 2, 3, 7, 32, 224, 1000):
      assert dwt.dwt_max_level(n, wavelet) == pywt.dwt_max_level(n, wavelet), (n, wavelet)


def test_bad_input():
  with pytest.raises(ValueError, match="unknown discrete wavelet"):
    dwt.dwt2(np.zeros((4, 4)), "nope")
  with pytest.raises(ValueError, match="not orthogonal"):
    dwt.dwt2(np.zeros((4, 4)), "bior2.2")
  with pytest.raises(ValueError, match="level"):
    dwt.wavedec2(np.zeros((4, 4)), level=-1)
  with pytest.raises(ValueError, match="distinct"):
    dwt.dwt2(np.zeros((4, 4)), axes=(0, 0))
