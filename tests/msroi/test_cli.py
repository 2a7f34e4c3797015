"""Tests of `python -m jaxcomp.msroi` (compress, evaluate) with the centre-bias map: sizes,
reports, one-line errors with exit codes 2 / 1, and no partial output files."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcomp.msroi import __main__ as cli
from jaxcomp.msroi import evaluate, variable_jpeg


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, shared_data):
  """A folder with one 181x203 Kodak crop (PNG)."""
  folder = tmp_path_factory.mktemp("images")
  Image.open(shared_data / "kodak" / "kodim05.png").crop((100, 50, 303, 231)).save(folder / "a.png")
  return folder


def _run(argv, capsys):
  try:
    code = cli.main([str(a) for a in argv])
  except SystemExit as e:                       # argparse's own errors
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def _standard_size(image: np.ndarray, quality: int) -> int:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "JPEG", quality=quality)
  return buf.tell()


def test_compress_matches_the_standard_jpeg_size(image_dir, tmp_path, capsys):
  out, heat = tmp_path / "out.jpg", tmp_path / "heat.png"
  code, stdout, _ = _run(["compress", image_dir / "a.png", out, "--match-quality", 50,
                          "--map", "center", "--heatmap", heat], capsys)
  assert code == 0 and "Q_f" in stdout
  image = np.asarray(Image.open(image_dir / "a.png").convert("RGB"))
  target = _standard_size(image, 50)
  assert abs(out.stat().st_size - target) <= 0.01 * target
  with Image.open(out) as im:
    assert im.format == "JPEG" and np.asarray(im).shape == image.shape
  saliency = evaluate.center_map(181, 203)
  np.testing.assert_array_equal(np.asarray(Image.open(heat)), np.round(saliency * 255))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.png", "out.jpg"]   # no temp files


def test_compress_final_quality(image_dir, tmp_path, capsys):
  out = tmp_path / "out.jpg"
  assert _run(["compress", image_dir / "a.png", out, "--final-quality", 60, "--map", "center",
               "--q-low", 20, "--q-high", 60, "--levels", 3], capsys)[0] == 0
  image = np.asarray(Image.open(image_dir / "a.png").convert("RGB"))
  assert out.read_bytes() == variable_jpeg.encode_variable_quality(
      image, evaluate.center_map(181, 203), q_final=60, qualities=(20, 40, 60))


def test_evaluate_report_and_figure(image_dir, tmp_path, capsys):
  report, fig = tmp_path / "r.json", tmp_path / "fig.png"
  code, stdout, _ = _run(["evaluate", "--images", image_dir, "--map", "center", "--output",
                          report, "--figure", fig], capsys)
  assert code == 0 and "msroi" in stdout and "luma" in stdout
  r = json.loads(report.read_text())
  assert r["settings"]["levels"] == [30, 40, 50, 60, 70] and len(r["images"]) == 1
  row = r["images"][0]
  assert row["image"] == "a.png" and row["standard"]["quality"] == 50
  assert abs(row["msroi"]["bytes"] - row["standard"]["bytes"]) <= 0.01 * row["standard"]["bytes"]
  for name in ("standard", "msroi"):
    for space in ("rgb", "luma"):
      scores = row[name][space]
      assert 20 < scores["psnr"] < 50 and 20 < scores["psnr_s"] < 50
      assert 0.5 < scores["ssim"] <= 1 and 0.5 < scores["ms_ssim"] <= 1   # luma crop 176x192
  assert r["mean"]["msroi"]["rgb"]["psnr"] == pytest.approx(row["msroi"]["rgb"]["psnr"])
  with Image.open(fig) as im:
    assert im.format == "PNG" and im.size[0] > 400


@pytest.mark.parametrize("extra, match", [
    (["--q-low", 70, "--q-high", 30], "inverted quality range"),
    (["--levels", 0], "k must be an integer >= 1"),
    (["--match-quality", 0], "--match-quality must lie in 1..100"),
    (["--tolerance", -1], "--tolerance must be >= 0"),
    (["--bogus"], "unrecognized arguments"),
])
def test_usage_errors_exit_2_without_output(image_dir, tmp_path, capsys, extra, match):
  out = tmp_path / "out.jpg"
  code, _, err = _run(["compress", image_dir / "a.png", out, "--map", "center", *extra], capsys)
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and match in err
  assert not list(tmp_path.iterdir())


def test_input_is_never_overwritten(image_dir, capsys):
  before = (image_dir / "a.png").read_bytes()
  code, _, err = _run(["compress", image_dir / "a.png", image_dir / "." / "a.png", "--map",
                       "center"], capsys)
  assert code == 2 and "refusing to overwrite the input" in err
  assert (image_dir / "a.png").read_bytes() == before


def test_runtime_errors_exit_1_without_partial_output(image_dir, tmp_path, capsys):
  not_image = tmp_path / "x.png"
  not_image.write_text("hello")
  code, _, err = _run(["compress", not_image, tmp_path / "x.jpg", "--map", "center"], capsys)
  assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
  # Levels 10..10 cannot reach a standard q100 JPEG's size: the error names the closest size.
  out, heat = tmp_path / "out.jpg", tmp_path / "heat.png"
  code, _, err = _run(["compress", image_dir / "a.png", out, "--map", "center", "--q-low", 10,
                       "--q-high", 10, "--match-quality", 100, "--heatmap", heat], capsys)
  assert code == 1 and "the closest is" in err and err.count("\n") == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
  (tmp_path / "empty").mkdir()
  code, _, err = _run(["evaluate", "--images", tmp_path / "empty", "--map", "center"], capsys)
  assert code == 1 and "no lossless images" in err


def test_fresh_process_loads_no_network():
  """`python -m jaxcomp.msroi` runs; the CLI module imports the MS-ROI network only on use."""
  proc = subprocess.run([sys.executable, "-m", "jaxcomp.msroi", "compress", "a.png", "b.jpg",
                         "--q-low", "70", "--q-high", "30"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr == (
      "error: inverted quality range: q_low=70 > q_high=30\n")
  probe = subprocess.run([sys.executable, "-c", "import sys, jaxcomp.msroi.__main__; "
                          "print('jaxcomp.msroi.maps' in sys.modules)"],
                         capture_output=True, text=True, timeout=120, check=True)
  assert probe.stdout.strip() == "False"


def test_quality_scores_on_rgb_and_luma():
  """`evaluate.quality` against hand-assembled metrics; PSNR-S's mask is cropped with the luma."""
  rng = np.random.default_rng(0)
  original = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
  decoded = np.clip(original + rng.integers(-9, 10, original.shape), 0, 255).astype(np.uint8)
  mask = np.zeros((40, 50), bool)
  mask[5:20, 10:30] = True
  mask[35:, :] = True                     # outside the 32x48 luma crop: ignored on luma
  rgb = evaluate.quality(original, decoded, mask, space="rgb")
  luma = evaluate.quality(original, decoded, mask, space="luma")
  assert rgb["ms_ssim"] is None and luma["ms_ssim"] is None          # too small for 5 scales
  x, y = (np.asarray(a, np.float64) for a in (original, decoded))
  np.testing.assert_allclose(rgb["psnr_s"], 10 * np.log10(255 ** 2 / np.mean(
      (x[mask] - y[mask]) ** 2)), rtol=1e-5)
  ly, lx = (np.round(16 + 219 * (a[:32, :48] @ [.299, .587, .114]) / 255) for a in (y, x))
  region = mask[:32, :48]
  np.testing.assert_allclose(luma["psnr_s"], 10 * np.log10(255 ** 2 / np.mean(
      (lx[region] - ly[region]) ** 2)), rtol=1e-5)
  np.testing.assert_allclose(luma["psnr"], 10 * np.log10(255 ** 2 / np.mean((lx - ly) ** 2)),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="unknown space"):
    evaluate.quality(original, decoded, mask, space="yuv")
