"""Tests of the corruption-robustness evaluator.

The accuracy plumbing is checked against numpy on the same images with a
hand-made classifier (brightest channel = class); arms, seeds and scores on a
hand table (BDA / BDAD / BDADS means by hand).
"""

from __future__ import annotations

import json
import types

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import config_lib
from jaxcomp.evaluators import EVALUATORS, corruption_robustness as cr


def _rule(images: np.ndarray) -> np.ndarray:
  """The hand classifier: the index of the channel with the largest mean (classes 0-2)."""
  return np.argmax(images.reshape(len(images), -1, 3).mean(axis=1), axis=-1)


def _apply(variables, images):
  del variables
  return jnp.eye(10)[jnp.argmax(images.reshape(images.shape[0], -1, 3).mean(axis=1), axis=-1)]


@pytest.fixture
def config(tmp_path):
  c = config_lib.base_config()
  c.data.num_eval_examples = 37                  # of the packaged sample's test split
  c.data.cache_dir = str(tmp_path / "cache")
  return c


def _fake_runs(tmp_path, monkeypatch, names):
  """Finished run folders whose `load_run` gives the hand classifier."""
  runs = []
  for n in names:
    (tmp_path / "runs" / n).mkdir(parents=True)
    (tmp_path / "runs" / n / "summary.json").write_text('{"final_step": 1}')
    runs.append(tmp_path / "runs" / n)
  monkeypatch.setattr(cr, "load_run", lambda workdir: (types.SimpleNamespace(apply_fn=_apply), {}))
  return runs


def test_evaluate_run_accuracy_is_numpys_and_cached(config, tmp_path, monkeypatch):
  (run,) = _fake_runs(tmp_path, monkeypatch, ["a_seed0"])
  acc = cr.evaluate_run(run, config.data, names=("contrast", "brightness"), severities=(1, 5),
                        batch_size=16)        # 37 images: 3 batches, the last one padded
  assert list(acc) == ["clean", ("contrast", 1), ("contrast", 5), ("brightness", 1),
                       ("brightness", 5)]
  sets = cr.corrupted_sets(config.data, names=("contrast", "brightness"), severities=(1, 5))
  for k, ds in sets.items():
    images, labels = ds.read(np.arange(len(ds)))
    assert len(ds) == 37
    assert acc[k] == pytest.approx(np.mean(_rule(images) == labels), abs=1e-12), k
  cached = list(run.glob("corruption_accuracy-*.json"))
  assert len(cached) == 1
  monkeypatch.setattr(cr, "accuracy", lambda *a, **k: pytest.fail("recomputed"))
  assert cr.evaluate_run(run, config.data, names=("contrast",), severities=(5,)) == {
      "clean": acc["clean"], ("contrast", 5): acc[("contrast", 5)]}


def test_arms_seeds_and_scores_on_a_hand_table():
  assert cr.arm_of("bls0.012_seed2") == ("bls0.012", 2)
  assert cr.arm_of("name=jpeg:20_seed=1") == ("name=jpeg:20", 1)
  assert cr.arm_of("original") == ("original", None)
  g = lambda clean, a, b: {"clean": clean, ("fog", 1): a, ("fog", 2): a, ("snow", 1): b,
                           ("snow", 2): b}
  results = {"x_seed0": g(.80, .1, .9), "x_seed1": g(.90, .5, .5),      # x keeps seed 1
             "y_seed0": g(.85, .6, .3)}
  s = cr.scores(results)
  assert s["best_seed"] == {"x": "x_seed1", "y": "y_seed0"}
  assert s["clean"] == {"x": .90, "y": .85}
  # Means over the four cells: x (seed 1) .5, y .45; BDAD: fog -> y (.6), snow -> x (.5).
  assert [m for m, _ in s["ranking"]] == ["x", "y"]
  assert s["ranking"][0][1] == pytest.approx(.5) and s["ranking"][1][1] == pytest.approx(.45)
  assert {c: v[0] for c, v in s["bdad"].items()} == {"fog": "y", "snow": "x"}
  assert s["bdads"]["snow:2"][0] == "x"
  csv = cr.to_csv(results).splitlines()
  assert csv[0] == "run,arm,seed,corruption,severity,accuracy" and len(csv) == 1 + 3 * 5
  assert "x_seed0,x,0,clean,,0.800000" in csv
  md = cr.to_markdown(results, s)
  assert "| x_seed1 | 90.00 | 50.00 | 50.00 | 50.00 |" in md and "BDA ranking" in md


def test_run_writes_the_report(config, tmp_path, monkeypatch):
  runs = _fake_runs(tmp_path, monkeypatch, ["a_seed0", "b_seed0"])
  (tmp_path / "runs" / "c_seed0").mkdir()                # unfinished: skipped
  monkeypatch.setattr(cr, "NAMES", ("contrast",))
  monkeypatch.setattr(cr, "SEVERITIES", (2,))
  config.mode = "corruption_robustness"
  config.robustness.checkpoints = str(tmp_path / "runs" / "*")
  report = EVALUATORS.get("corruption_robustness")(config, str(tmp_path / "out"))
  assert set(report["runs"]) == {r.name for r in runs}
  assert set(report["runs"]["a_seed0"]) == {"clean", "contrast:2"}
  saved = json.loads((tmp_path / "out" / "corruption_robustness.json").read_text())
  assert saved["best_seed"] == {"a": "a_seed0", "b": "b_seed0"}
  assert (tmp_path / "out" / "corruption_robustness.csv").read_text().count("\n") == 5
  assert "BDA ranking" in (tmp_path / "out" / "corruption_robustness.md").read_text()
