"""BDA / BDAD / BDADS (Sec. 4.3 of papers/000) on hand tables with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxcomp.evaluators import corruption_scores as cs

# Three methods x two corruptions x two severities, written out by hand:
#                 fog s1  fog s2  snow s1  snow s2   mean   fog mean  snow mean
#   0.012          .80     .60     .70      .50      .650     .70       .60
#   0.1            .90     .40     .60      .60      .625     .65       .60
#   0.05           .70     .70     .75      .45      .650     .70       .60
TABLE = {
    0.012: {"fog": (.80, .60), "snow": (.70, .50)},
    0.1: {"fog": (.90, .40), "snow": (.60, .60)},
    0.05: {"fog": (.70, .70), "snow": (.75, .45)},
}


def _results(table=TABLE) -> dict:
  return {(m, c, s + 1): acc for m, row in table.items() for c, accs in row.items()
          for s, acc in enumerate(accs)}


def test_grid():
  methods, corruptions, severities, acc = cs.grid(_results())
  assert methods == [0.012, 0.1, 0.05] and corruptions == ["fog", "snow"]
  assert severities == [1, 2] and acc.shape == (3, 2, 2)
  assert acc[1, 0, 0] == .90 and acc[2, 1, 1] == .45


def test_ranking_and_bda_break_ties_by_order_of_appearance():
  """0.012 and 0.05 tie at .65 (in float64 .8+.6+.7+.5 = 2.5999999999999996 and
  .7+.7+.75+.45 = 2.6: the means are compared to 9 decimals); 0.012 comes first."""
  assert [c.method for c in cs.ranking(_results())] == [0.012, 0.05, 0.1]
  np.testing.assert_allclose([c.accuracy for c in cs.ranking(_results())], [.65, .65, .625])
  assert cs.bda(_results()).method == 0.012
  reordered = {k: v for k, v in sorted(_results().items(), key=lambda kv: kv[0][0] != 0.05)}
  assert cs.bda(reordered).method == 0.05
  assert [c.method for c in cs.ranking(reordered)] == [0.05, 0.012, 0.1]


def test_bdad():
  """fog: 0.012 and 0.05 tie at .70 (first wins); snow: all three tie at .60."""
  got = cs.bdad(_results())
  assert list(got) == ["fog", "snow"]
  assert got["fog"].method == 0.012 and got["fog"].accuracy == pytest.approx(.70)
  assert got["snow"].method == 0.012 and got["snow"].accuracy == pytest.approx(.60)


def test_bdads():
  got = cs.bdads(_results())
  want = {("fog", 1): (0.1, .90), ("fog", 2): (0.05, .70), ("snow", 1): (0.05, .75),
          ("snow", 2): (0.1, .60)}
  assert {k: (v.method, v.accuracy) for k, v in got.items()} == want   # single cells: exact


def test_a_clear_winner_on_a_random_grid():
  """One method 1% better everywhere wins BDA, every BDAD and every BDADS cell."""
  rng = np.random.default_rng(0)
  methods = ["jpeg80", "jpeg20", "jpeg1"]
  corruptions = ["gaussian_noise", "fog", "frost"]
  results = {(m, c, s): rng.uniform(.3, .6) for m, c, s in
             itertools.product(methods, corruptions, range(1, 6))}
  for c, s in itertools.product(corruptions, range(1, 6)):
    results[("jpeg20", c, s)] = max(results[(m, c, s)] for m in methods) + .01
  assert cs.bda(results).method == "jpeg20"
  assert cs.ranking(results)[0].method == "jpeg20"
  assert {v.method for v in cs.bdad(results).values()} == {"jpeg20"}
  assert {v.method for v in cs.bdads(results).values()} == {"jpeg20"}
  assert len(cs.bdads(results)) == 15


@pytest.mark.parametrize("fn", [cs.bda, cs.bdad, cs.bdads, cs.ranking])
def test_missing_cells_are_named(fn):
  results = _results()
  del results[(0.1, "snow", 2)]
  with pytest.raises(ValueError, match=r"1 missing .* cells, e.g. \[\(0.1, 'snow', 2\)\]"):
    fn(results)


@pytest.mark.parametrize("results, match", [
    ({}, "no results"),
    ({("a", "fog"): .5}, r"result keys must be \(method, corruption, severity\)"),
    ({("a", "fog", 1): float("nan")}, "is not finite"),
])
def test_bad_results(results, match):
  with pytest.raises(ValueError, match=match):
    cs.bda(results)
