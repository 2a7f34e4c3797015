"""Learned JPEG-DL tables written as real JPEG files (a 2-step run on the packaged sample)."""

import json

import numpy as np
import pytest

from jaxcomp.codecs import jpeg_files
from jaxcomp.evaluators import learned_tables
from jaxcomp.evaluators.runs import load_run


def test_report_sizes_tables_and_accuracies(jpeg_dl_run, tmp_path):
  out = tmp_path / "report.json"
  assert learned_tables.main([f"--workdir={jpeg_dl_run / 'jdl'}",
                              f"--baseline={jpeg_dl_run / 'base'}", f"--out={out}",
                              f"--plot={tmp_path / 'tables.png'}"]) == 0
  assert (tmp_path / "tables.png").stat().st_size > 0
  report = json.loads(out.read_text())
  assert report["images"] == 48
  luma = np.asarray(report["tables"]["luma"])
  assert luma.shape == (8, 8) and luma.min() >= 1 and luma.max() <= 255
  learned = report["learned"]
  # 32x32 RGB: bpp = 8 * bytes / 1024; entropy-coded part is smaller than the file.
  assert learned["bpp"] == pytest.approx(8 * learned["bytes"] / 1024)
  assert 0 < learned["entropy_coded_bytes"] < learned["bytes"]
  for key in ("accuracy_decoded_files", "accuracy_soft_layer"):
    assert 0.0 <= learned[key] <= 1.0
  for sub in ("4:4:4", "4:2:0"):
    entry = report[f"standard_{sub}"]
    assert 1 <= entry["quality_of_equal_size"] <= 100
    assert 0.0 <= entry["baseline_accuracy_decoded_files"] <= 1.0


def test_exported_tables_are_the_files_tables(jpeg_dl_run):
  task, variables = load_run(jpeg_dl_run / "jdl")
  from jaxcomp.layers import jpeg_table_recipes
  luma, chroma = jpeg_table_recipes.export_tables(variables["params"]["jpeg_layer"])
  image, _ = task.eval_ds.read(np.arange(1))
  data = jpeg_files.encode_jpeg(image[0], qtables=(luma, chroma), subsampling="4:4:4")
  got = jpeg_files.quantization_tables(data)
  np.testing.assert_array_equal(got[0], luma)
  np.testing.assert_array_equal(got[1], chroma)


def test_errors(jpeg_dl_run, tmp_path):
  assert learned_tables.main([f"--workdir={tmp_path}"]) == 2          # not a workdir
  assert learned_tables.main([f"--workdir={jpeg_dl_run / 'base'}"]) == 2  # no layer
