"""BDA, BDAD and BDADS: picking a data-quality parameter from corruption accuracies.

Sec. 4.3 of the compressed-training thesis (papers/000): for one augmentation
family (e.g. BLS at seven lambdas, or JPEG at seven qualities), each *method* (a
quality parameter) trains a classifier, which is tested on every corruption at
every severity. From that grid:

  * BDA (Best Data Augmentation): the method with the highest mean accuracy over
    all corruptions and severities (`bda`; the full order is `ranking`, Table 4.2);
  * BDAD (... per Deformation): per corruption, the method with the highest mean
    accuracy over the severities (`bdad`, Table 4.3);
  * BDADS (... per Deformation and Severity): per (corruption, severity), the
    method with the highest accuracy (`bdads`).

Input: a mapping `{(method, corruption, severity): accuracy}` that must be a full
grid (every method x every corruption x every severity that occurs anywhere in
it); methods are any hashable labels (e.g. 0.012 or "jpeg80"). Ties: means are
compared after rounding to 9 decimals (so that .8+.6+.7+.5 = 2.5999999999999996
ties with .7+.7+.75+.45 = 2.6); among tied methods the one that appears first in
the mapping (insertion order) wins, and `ranking` keeps that order.
"""

from __future__ import annotations

from typing import Hashable, Mapping, NamedTuple

import numpy as np

Results = Mapping[tuple[Hashable, str, int], float]


class Choice(NamedTuple):
  """A selected method and the mean accuracy it reaches where it was selected."""
  method: Hashable
  accuracy: float


def grid(results: Results) -> tuple[list, list, list, np.ndarray]:
  """The results as a dense array.

  Args:
    results: `{(method, corruption, severity): accuracy}`, a full grid of finite
      accuracies.

  Returns:
    (methods, corruptions, severities, accuracy): the labels in order of first
    appearance and float64 [M, C, S] with `accuracy[m, c, s] = results[(methods[m],
    corruptions[c], severities[s])]`.

  Raises:
    ValueError: empty results, keys that are not 3-tuples, non-finite accuracies,
      missing cells (the first few are named).
  """
  if not results:
    raise ValueError("no results: expected {(method, corruption, severity): accuracy}")
  axes: tuple[dict, dict, dict] = ({}, {}, {})
  for key in results:
    if not isinstance(key, tuple) or len(key) != 3:
      raise ValueError(f"result keys must be (method, corruption, severity), got {key!r}")
    for axis, label in zip(axes, key):
      axis.setdefault(label, len(axis))
  acc = np.full([len(a) for a in axes], np.nan)
  for (m, c, s), value in results.items():
    if not np.isfinite(value):
      raise ValueError(f"accuracy of {(m, c, s)!r} is not finite: {value!r}")
    acc[axes[0][m], axes[1][c], axes[2][s]] = value
  labels = [list(a) for a in axes]
  missing = np.argwhere(np.isnan(acc))
  if len(missing):
    cells = [tuple(labels[i][j] for i, j in enumerate(cell)) for cell in missing[:5]]
    raise ValueError(f"{len(missing)} missing (method, corruption, severity) cells, "
                     f"e.g. {cells}")
  return labels[0], labels[1], labels[2], acc


_DECIMALS = 9


def _best(methods: list, means: np.ndarray) -> Choice:
  i = int(np.argmax(np.round(means, _DECIMALS)))   # the first maximum: ties go first-listed
  return Choice(methods[i], float(means[i]))


def ranking(results: Results) -> list[Choice]:
  """Every method with its mean accuracy over all corruptions and severities, best
  first (Table 4.2); tied methods keep their order of appearance."""
  methods, _, _, acc = grid(results)
  means = acc.mean(axis=(1, 2))
  key = -np.round(means, _DECIMALS)
  order = sorted(range(len(methods)), key=lambda i: key[i])   # stable: ties keep order
  return [Choice(methods[i], float(means[i])) for i in order]


def bda(results: Results) -> Choice:
  """BDA: the method with the best mean accuracy over all corruptions and severities."""
  methods, _, _, acc = grid(results)
  return _best(methods, acc.mean(axis=(1, 2)))


def bdad(results: Results) -> dict[str, Choice]:
  """BDAD: per corruption, the method with the best mean accuracy over the severities.

  Returns:
    `{corruption: Choice}` in order of appearance; the mean of the accuracies is
    the BDAD accuracy over all corruptions (Fig. 4.4 per severity).
  """
  methods, corruptions, _, acc = grid(results)
  means = acc.mean(axis=2)
  return {c: _best(methods, means[:, j]) for j, c in enumerate(corruptions)}


def bdads(results: Results) -> dict[tuple[str, int], Choice]:
  """BDADS: per (corruption, severity), the method with the best accuracy.

  Returns:
    `{(corruption, severity): Choice}`.
  """
  methods, corruptions, severities, acc = grid(results)
  return {(c, s): _best(methods, acc[:, j, k])
          for j, c in enumerate(corruptions) for k, s in enumerate(severities)}
