"""launch/repr_figures.py on hand-written workdirs: the table's numbers are the runs'
last eval rows (mean, sample std), an unfinished run is listed apart, the pruned
phases pair each drop with its re-introduction (an open one ends at the last row),
and the three figures are written."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("repr_figures", ROOT / "launch" / "repr_figures.py")
repr_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repr_figures)

_CONFIG = {"train": {"epochs": 4.0}, "data": {"num_train_examples": 40, "num_eval_examples": 20,
                                              "augment": "none"},
           "model": {"name": "convnet_c3_32"},
           "repr": {"rounds": 1, "s1_epochs": 1.0, "s2_epochs": 1.0, "fraction": 0.3,
                    "metric": "ortho", "exclude_first": True}}


def _run(root, group, arm, seed, evals, *, drop=True, finished=True):
  """A workdir with 10 steps per epoch, one eval per epoch (accuracies `evals`)."""
  wd = root / group / f"{arm}_seed{seed}"
  wd.mkdir(parents=True)
  rows = []
  for e, acc in enumerate(evals, start=1):
    rows.append({"step": 10 * e, "split": "train", "accuracy": 0.9, "ortho_sum": 7.0 - e,
                 "epoch": float(e)})
    if drop and e == 1:
      rows.append({"step": 10, "split": "event", "event": "repr_drop",
                   "counts": {"backbone/conv1": 0, "backbone/conv2": 3}})
    if drop and e == 2:
      rows.append({"step": 20, "split": "event", "event": "repr_reintroduce",
                   "counts": {"backbone/conv2": 3}})
    rows.append({"step": 10 * e, "split": "eval", "accuracy": acc})
  (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (wd / "config.json").write_text(json.dumps(_CONFIG))
  if finished:
    (wd / "summary.json").write_text(json.dumps({"eval": {"accuracy": evals[-1]}}))
  return wd


def test_summary_numbers_and_phases(tmp_path):
  _run(tmp_path, "c3", "standard", 0, [0.3, 0.4, 0.5, 0.6], drop=False)
  _run(tmp_path, "c3", "standard", 1, [0.3, 0.4, 0.5, 0.5], drop=False)
  _run(tmp_path, "c3", "ortho", 0, [0.3, 0.1, 0.6, 0.7])
  _run(tmp_path, "c3", "ortho", 1, [0.3, 0.2], finished=False)
  report = repr_figures.summarize(tmp_path)["c3"]
  std = report["standard"]
  assert std["seeds"] == [0, 1] and std["final_test_accuracy"] == [0.6, 0.5]
  assert std["mean"] == pytest.approx(0.55)
  assert std["std"] == pytest.approx(np.std([0.6, 0.5], ddof=1))      # sample std
  ortho = report["ortho"]
  assert ortho["seeds"] == [0] and ortho["mean"] == pytest.approx(0.7) and ortho["std"] is None
  assert ortho["best_test_accuracy"] == [0.7]
  assert ortho["unfinished"] == {1: {"epoch": 2.0, "test_accuracy": 0.2}}
  assert ortho["drop_counts"][0] == [{"backbone/conv1": 0, "backbone/conv2": 3}]
  rows = [json.loads(l) for l in (tmp_path / "c3/ortho_seed0/metrics.jsonl").read_text().splitlines()]
  assert repr_figures._phases(rows) == [(10, 20)]
  assert repr_figures._phases(rows[:3]) == [(10, 10)]      # open phase: ends at the last row
  assert repr_figures._steps_per_epoch(rows) == 10


def test_figures_are_written(tmp_path):
  _run(tmp_path / "runs", "c3", "standard", 0, [0.3, 0.4], drop=False)
  _run(tmp_path / "runs", "c3", "ortho", 0, [0.3, 0.1, 0.5])
  repr_figures.plot(tmp_path / "runs", tmp_path, "x")
  for name in ("x_curves.png", "x_ortho_sum.png", "x_counts.png"):
    assert (tmp_path / name).stat().st_size > 1000
