"""Tests of the compressed-training report (evaluators/compressed_training.py).

The parsing of source names into (family, level, test data) against hand
expectations, the Fig. 4.7 spectrum against numpy's FFT, the seed averaging
against numpy's mean / std (ddof 1), and a finished run read back.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxcomp.evaluators import compressed_training


@pytest.mark.parametrize("name,expected", [
    ("cifar10_jpeg75", ("original", "", "original")),
    ("compressed_train:cifar10_jpeg75:jpeg:20", ("jpeg", "20", "original")),
    ("compressed:tfds:cifar10:jpeg:5:444", ("jpeg", "5:444", "compressed")),
    ("compressed:cifar10_jpeg75:bls2017:cifar10-bls-0.012", ("bls", "0.012", "compressed")),
    ("compressed:x:hyperprior:/runs/q3", ("hyperprior", "/runs/q3", "compressed")),
    ("corrupted_train:cifar10_jpeg75:noise:0.05", ("noise", "0.05", "original")),
    ("union:compressed_train:subset:9:c:bls2017:cifar10-bls-0.012|"
     "compressed_train:subset:9:c:bls2017:cifar10-bls-0.1", ("union", "bls:0.012+bls:0.1",
                                                              "original")),
])
def test_family_of(name, expected):
  assert compressed_training.family_of(name) == expected


def test_log_spectrum_is_numpys():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
  f = np.abs(np.fft.fft2(images / 255.0, axes=(1, 2)))
  ref = np.fft.fftshift(np.log1p(f).mean(axis=(0, 3)))
  ref = (ref - ref.min()) / (ref.max() - ref.min())
  out = np.asarray(compressed_training.log_spectrum(images))
  np.testing.assert_allclose(out, ref, atol=1e-5)
  assert out.shape == (8, 6) and out.min() == 0 and out.max() == pytest.approx(1)
  # A DC-only image peaks at the centre after fftshift.
  flat = compressed_training.log_spectrum(np.full((1, 8, 8, 3), 200, np.uint8))
  assert np.unravel_index(np.argmax(flat), flat.shape) == (4, 4)


def test_report_tables_and_figures(tmp_path):
  rows = [dict(run=f"r{i}", arm=arm, seed=i, family=fam, level=lv, train_data="x", test="original",
               model="m", params=10, accuracy=acc, bpp=bpp, file_bpp=bpp, psnr=30.0, ssim=.9,
               corrupt_accuracy=math.nan if arm == "o" else .4)
          for i, (arm, fam, lv, acc, bpp) in enumerate([("a", "jpeg", "20", .5, 1.0),
                                                         ("a", "jpeg", "20", .7, 1.0),
                                                         ("o", "original", "", .8, math.nan)])]
  arms = compressed_training.arms(rows)
  a = next(x for x in arms if x["arm"] == "a")
  assert a["n"] == 2 and a["accuracy"] == pytest.approx(.6)
  assert a["accuracy_std"] == pytest.approx(np.std([.5, .7], ddof=1))
  md = compressed_training.to_markdown(rows)
  assert ("| jpeg | 20 | original | m | 10 | 2 | 60.00 +- 14.14 | 1.000 | 30.00 | 0.9000 | 40.00 |"
          in md)
  assert compressed_training.to_csv(rows).splitlines()[0] == ",".join(compressed_training.COLUMNS)
  compressed_training.plot_quality(rows, tmp_path / "q.png", ["bpp"])
  compressed_training.plot_parameters(rows, tmp_path / "p.png")
  compressed_training.plot_clean_vs_corrupt(rows, tmp_path / "c.png")
  compressed_training.plot_spectra({"jpeg 20": np.eye(8)}, tmp_path / "s.png")
  tested_compressed = [dict(r, test="compressed", run=r["run"] + "c", arm="ac") for r in rows[:2]]
  compressed_training.plot_quality(rows + tested_compressed, tmp_path / "qc.png", ["bpp"],
                                   test="compressed")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "p.png", "q.png", "qc.png",
                                                        "s.png"]


def test_collect_reads_a_finished_run(jpeg_dl_run):
  (row,) = compressed_training.collect([jpeg_dl_run / "base"])
  summary = json.loads((jpeg_dl_run / "base" / "summary.json").read_text())
  assert row["family"] == "original" and row["model"] == "convnet_c2_32"
  assert row["accuracy"] == summary["eval"]["accuracy"] and row["params"] > 0
  assert math.isnan(row["bpp"]) and math.isnan(row["corrupt_accuracy"])


def test_family_tables_rank_within_each_family_by_the_best_seed():
  """Hand table: JPEG q20 (two seeds, the better clean one kept) against q80; a noise
  family with one level (no table) and the original (never ranked)."""
  def row(run, fam, level, acc, corrupt):
    return dict(run=run, arm=run.rsplit("_", 1)[0], family=fam, level=level, test="original",
                model="m", accuracy=acc, corrupt_accuracy=corrupt)
  rows = [row("q20_seed0", "jpeg", "20", .70, .30), row("q20_seed1", "jpeg", "20", .60, .20),
          row("q80_seed0", "jpeg", "80", .55, .25), row("n_seed0", "noise", "0.1", .5, .9),
          row("o_seed0", "original", "", .9, .9)]
  # The seed is picked by the clean accuracy on the corrupted sets' images ("clean"),
  # not by the run's own test accuracy (rows' "accuracy", where q20_seed0 is the higher).
  grids = {"q20_seed0": {"clean": .4, ("fog", 1): .3, ("fog", 2): .3, ("snow", 1): .3,
                         ("snow", 2): .3},
           "q20_seed1": {"clean": .6, ("fog", 1): .1, ("fog", 2): .1, ("snow", 1): .3,
                         ("snow", 2): .3},
           "q80_seed0": {"clean": .5, ("fog", 1): .2, ("fog", 2): .4, ("snow", 1): .2,
                         ("snow", 2): .2},
           "n_seed0": {"clean": .5, ("fog", 1): .9, ("fog", 2): .9, ("snow", 1): .9,
                       ("snow", 2): .9},
           "o_seed0": {"clean": .9, ("fog", 1): .9, ("fog", 2): .9, ("snow", 1): .9,
                       ("snow", 2): .9}}
  md = compressed_training.family_tables(rows, grids)
  # Best seed of q20 is seed 1 (clean .60): mean corrupt .20 < q80's .25.
  assert "BDA ranking (Table 4.2): 80 (25.00) > 20 (20.00)" in md
  # By the seed mean q20 has (.30 + .20) / 2 = .25 = q80's, listed in level order.
  assert "by the mean over seeds: 20 (25.00 +- 7.07, 2 seeds) > 80 (25.00, 1 seed)" in md
  assert "| BDAD (Table 4.3) | 80 | 20 |" in md          # fog: .3 vs .1; snow: .2 vs .3
  assert "noise" not in md and "original" not in md
  assert compressed_training.family_tables(rows[3:], grids) == ""
