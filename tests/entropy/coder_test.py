"""Tests of jaxcomp.entropy.coder: integer tables, exact range coding, escapes, bad data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from jaxcomp.entropy import coder, gaussian_conditional as gc


@pytest.fixture(scope="module")
def tables():
  table = gc.scale_table()
  return table, coder.Tables.from_pmfs(*gc.pmf_table(table))


def test_quantize_pmf_properties():
  rng = np.random.default_rng(0)
  for n in (1, 2, 10, 3000):
    p = rng.dirichlet(np.full(n, 0.3))
    counts = coder.quantize_pmf(p, 1e-9)
    assert counts.sum() == 2 ** 16 and counts.min() >= 1 and len(counts) == n + 1
    # Each count is within n + 1 of its ideal share (floor, +1 floor, remainder).
    assert np.all(np.abs(counts[:-1] - p * 2 ** 16) <= n + 2)
    np.testing.assert_array_equal(counts, coder.quantize_pmf(p.copy(), 1e-9))  # deterministic
  with pytest.raises(ValueError, match="too long"):
    coder.quantize_pmf(np.ones(40000), 0.0)


def test_round_trip_with_escapes(tables):
  table, t = tables
  rng = np.random.default_rng(1)
  idx = rng.integers(0, 64, size=(3, 50, 40))
  sym = np.round(rng.normal(size=idx.shape) * table[idx]).astype(np.int32)
  sym.flat[:6] = [100_000, -2 ** 29, 5000, -77, 3, 2 ** 30 - 1]    # far outside their tables
  data = coder.encode(sym, idx, t)
  assert len(data) % 4 == 0
  np.testing.assert_array_equal(coder.decode(data, idx, t), sym)


def test_empty_and_single_table(tables):
  _, t = tables
  empty = np.zeros((0,), np.int32)
  assert coder.decode(coder.encode(empty, empty, t), empty, t).shape == (0,)
  sym = np.zeros(100, np.int32)
  idx = np.zeros(100, np.int32)
  np.testing.assert_array_equal(coder.decode(coder.encode(sym, idx, t), idx, t), sym)


def test_rate_close_to_ideal(tables):
  table, t = tables
  rng = np.random.default_rng(2)
  idx = rng.integers(0, 64, size=200_000)
  sym = np.round(rng.normal(size=idx.shape) * table[idx]).astype(np.int32)
  bits = 8 * len(coder.encode(sym, idx, t))
  s = table[idx]
  ideal = -np.log2(stats.norm.cdf(sym + 0.5, 0, s) - stats.norm.cdf(sym - 0.5, 0, s)).sum()
  # 16-bit tables (each symbol >= 1/65536) and the coder's 32-bit words: measured +0.1 %.
  assert ideal <= bits <= 1.005 * ideal


def test_bad_inputs(tables):
  _, t = tables
  with pytest.raises(ValueError, match="shape"):
    coder.encode(np.zeros(3, np.int32), np.zeros(4, np.int32), t)
  with pytest.raises(ValueError, match="indexes"):
    coder.encode(np.zeros(3, np.int32), np.full(3, 64), t)
  with pytest.raises(ValueError, match="integers"):
    coder.encode(np.zeros(3), np.zeros(3, np.int32), t)
  with pytest.raises(ValueError, match="2\\*\\*30"):
    coder.encode(np.asarray([2 ** 30]), np.zeros(1, np.int32), t)


def test_corrupt_data_raises_coding_error_or_decodes(tables):
  # Without the container's checksum a range-coded stream cannot always tell a flipped
  # bit from data; it must still only ever raise CodingError (never hang or crash).
  table, t = tables
  rng = np.random.default_rng(3)
  idx = rng.integers(0, 64, size=2000)
  sym = np.round(rng.normal(size=idx.shape) * table[idx]).astype(np.int32)
  data = coder.encode(sym, idx, t)
  raised = 0
  for case in range(200):
    d = bytearray(data)
    if case % 2:
      d = d[:rng.integers(0, len(d) // 4) * 4]
    else:
      d[rng.integers(len(d))] ^= 1 << rng.integers(8)
    try:
      out = coder.decode(bytes(d), idx, t)
      assert out.shape == sym.shape
    except coder.CodingError:
      raised += 1
  assert raised >= 100  # every truncation is detected here (observed: all of them)
  with pytest.raises(coder.CodingError, match="multiple of 4"):
    coder.decode(data[:-1], idx, t)
