"""Tests of `python -m jaxcomp.codecs`: list, compress / decompress, evaluate, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp.codecs import __main__ as cli
from jaxcomp.codecs import learned, pretrained


@pytest.fixture(scope="module")
def model_name():
  # A model trained on photo crops: the cifar10-bls-* models are trained on whole
  # 32x32 images (every latent touches the border) and are not meant for photos.
  assert "hyperprior-q1" in pretrained.list_models()
  return "hyperprior-q1"


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


def test_evaluate_a_family_writes_report_and_plot(image_file, tmp_path, capsys):
  names = ["hyperprior-q1", "hyperprior-q4"]   # two rate points of one family
  folder = image_file.parent
  report = tmp_path / "rd.json"
  argv = ["evaluate", "--images", folder, "--output", report, "--jpeg-qualities", "5,10,50"]
  for name in names:      # one curve, one BD-rate
    argv += ["--model", name]
  code, out, _ = _run(argv, capsys)
  assert code == 0 and "BD-rate" in out
  r = json.loads(report.read_text())
  assert [m["model"] for m in r["models"]] == names
  row = r["models"][0]["images"][0]
  assert row["image"] == "crop.png"
  assert {"bpp", "psnr", "ms_ssim", "estimated_bpp", "payload_vs_estimate"} <= set(
      r["models"][0]["mean"])
  # Stream vs likelihood estimate (measured: +0.4 % for q1 here): 2 % on this 203x181 crop,
  # whose short streams pay the coder's fixed flush costs relatively more than Kodak images.
  assert abs(row["payload_vs_estimate"]) < 0.02
  assert len(r["jpeg_420"]) == 3 and (tmp_path / "rd.png").stat().st_size > 0
  assert set(r["jpeg_bpp_at_equal_psnr"]) == set(names)
  assert isinstance(r["bd_rate_vs_jpeg_percent"], float)     # measured: -9.4 %


def test_export_a_chosen_step_with_its_metadata(model_name, tmp_path, capsys):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top  (slow import)

  _, params, meta = pretrained.load(model_name)
  codec = {k: meta[k] for k in ("architecture", "quality", "num_filters", "num_latent", "gdn",
                                "distortion", "crop")}
  (tmp_path / "config.json").write_text(json.dumps({"codec": {**codec, "lmbda": 0.0}}))
  later = jax.tree.map(lambda v: v + 1.0, params)
  with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
    for step, tree in ((10, params), (20, later)):
      manager.save(step, args=ocp.args.StandardSave({"params": tree}))
    manager.wait_until_finished()
  out = tmp_path / "w.npz"
  code, _, err = _run(["export", "--checkpoint", tmp_path, "--step", 10, "--dtype", "float32",
                       "--training-command", "python -m jaxcomp.main ...", out], capsys)
  assert code == 0, err
  _, got, got_meta = pretrained.load_file(out)
  # Step 10 holds `params` (not the latest, step 20); only the quantiles are refitted on export.
  flat = flax.traverse_util.flatten_dict(got, sep="/")
  for k, v in flax.traverse_util.flatten_dict(params, sep="/").items():
    if not k.endswith("quantiles"):
      np.testing.assert_array_equal(flat[k], v, err_msg=k)
  assert got_meta["step"] == 10 and got_meta["training_command"] == "python -m jaxcomp.main ..."
  # lmbda 0 in the config means the quality preset's value (SPEC Sec. 3).
  assert got_meta["lmbda"] == learned.lmbda(codec["quality"])
  code, _, err = _run(["export", "--checkpoint", tmp_path, "--step", 7, out], capsys)
  assert code == 1 and "no checkpoint at step 7" in err and err.count("\n") == 1
