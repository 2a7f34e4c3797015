"""The sensitivity-map report of a baseline run (JPEG-DL's initial tables)."""

import numpy as np
import pytest

from jaxcomp.evaluators import sensitivity_maps


def test_report_of_the_baseline_run(jpeg_dl_run, tmp_path):
  r = sensitivity_maps.sensitivity_report(str(jpeg_dl_run / "base"), images=32, q_max=10.0)
  for mode in ("train", "eval"):
    luma = np.asarray(r[mode]["luma"])
    assert luma.shape == (8, 8) and np.isclose(luma.max(), 10.0)      # largest step = q_max
    assert np.all(luma > 0) and r[mode]["dc_clips_at_8_bits"] == (luma[0, 0] < 1024 / 127)
    assert np.asarray(r[mode]["chroma"]).shape == (8, 8)
  assert r["train_vs_eval_max_relative_difference"] >= 0.0
  sensitivity_maps.plot(r, tmp_path / "s.png")
  assert (tmp_path / "s.png").stat().st_size > 0


def test_a_run_with_the_layer_is_refused(jpeg_dl_run):
  with pytest.raises(ValueError, match="JPEG layer"):
    sensitivity_maps.sensitivity_report(str(jpeg_dl_run / "jdl"), images=16)
