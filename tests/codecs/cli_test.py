"""Tests of `python -m jaxcomp.codecs`: list, compress / decompress, evaluate, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcomp.codecs import __main__ as cli
from jaxcomp.codecs import zoo


@pytest.fixture(scope="module")
def model_name():
  names = zoo.list_models()
  assert names, "no shipped model in jaxcomp/codecs/weights"
  return names[0]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, shared_data):
  path = tmp_path_factory.mktemp("img") / "crop.png"
  Image.open(shared_data / "kodak" / "kodim01.png").crop((0, 0, 203, 181)).save(path)
  return path


def _run(argv, capsys):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_list_in_a_fresh_process(model_name):
  out = subprocess.run([sys.executable, "-m", "jaxcomp.codecs", "list"], check=True,
                       capture_output=True, text=True, timeout=120).stdout
  assert model_name in out.split("\n")


def test_compress_decompress(model_name, image_file, tmp_path, capsys):
  stream, back = tmp_path / "a.jcx", tmp_path / "back.png"
  assert _run(["compress", "--model", model_name, image_file, stream], capsys)[0] == 0
  assert _run(["decompress", stream, back], capsys)[0] == 0
  original, decoded = np.asarray(Image.open(image_file)), np.asarray(Image.open(back))
  assert decoded.shape == original.shape
  mse = np.mean((decoded.astype(float) - original) ** 2)
  assert 10 * np.log10(255 ** 2 / mse) > 20   # a trained codec, not noise


def test_errors_are_one_line(model_name, image_file, tmp_path, capsys):
  not_image = tmp_path / "x.png"
  not_image.write_text("hello")
  corrupt = tmp_path / "c.jcx"
  cli.main(["compress", "--model", model_name, str(image_file), str(corrupt)])
  data = bytearray(corrupt.read_bytes())
  data[-3] ^= 0xFF
  corrupt.write_bytes(bytes(data))
  foreign = tmp_path / "f.jcx"
  foreign.write_bytes(image_file.read_bytes())
  cases = [(["compress", "--model", "nope", image_file, tmp_path / "o"], "unknown model"),
           (["compress", "--model", model_name, not_image, tmp_path / "o"], "cannot identify"),
           (["compress", "--model", model_name, tmp_path / "missing.png", tmp_path / "o"],
            "No such file"),
           (["decompress", corrupt, tmp_path / "o.png"], "checksum"),
           (["decompress", foreign, tmp_path / "o.png"], "bad magic"),
           (["compress", "--checkpoint", tmp_path, image_file, tmp_path / "o"], "config.json")]
  for argv, message in cases:
    code, out, err = _run(argv, capsys)
    assert code == 1 and message in err and err.count("\n") == 1, (argv, err)
    assert "Traceback" not in err


def test_evaluate_writes_report_and_plot(model_name, image_file, tmp_path, capsys):
  folder = image_file.parent
  report = tmp_path / "rd.json"
  code, out, _ = _run(["evaluate", "--model", model_name, "--images", folder, "--output", report,
                       "--jpeg-qualities", "10,50,90"], capsys)
  assert code == 0 and "BD-rate" in out
  r = json.loads(report.read_text())
  assert r["models"][0]["images"][0]["image"] == "crop.png"
  assert {"bpp", "psnr", "ms_ssim"} <= set(r["models"][0]["mean"])
  assert len(r["jpeg_420"]) == 3 and (tmp_path / "rd.png").stat().st_size > 0
