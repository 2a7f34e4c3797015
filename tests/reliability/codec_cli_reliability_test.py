"""`python -m jaxcomp.codecs` against careless and hostile input (issue 14.2, 14.3, 14.9)."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from jaxcomp import checkpoint
from jaxcomp.codecs import __main__ as cli
from jaxcomp.codecs import bitstream, compression, pretrained


@pytest.fixture(scope="module")
def model_name():
  return next(n for n in pretrained.list_models() if n.startswith("hyperprior"))


def _run(argv, capsys):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def _one_line(err: str) -> bool:
  return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_sixteen_bit_grey_is_scaled_not_saturated(tmp_path):
  # Issue 14.2: `convert("RGB")` saturates I;16 images, which came back near-white (4.6 dB).
  ramp = np.linspace(0, 65535, 96 * 128).reshape(96, 128).astype(np.uint16)
  path = tmp_path / "grey16.png"
  Image.fromarray(ramp).save(path)
  assert Image.open(path).mode == "I;16"
  expected = np.round(ramp / 257.0).astype(np.uint8)           # v * 255 / 65535
  np.testing.assert_array_equal(cli._read_image(str(path))[..., 1], expected)


@pytest.mark.slow
def test_sixteen_bit_grey_round_trips(model_name, tmp_path, capsys):
  ramp = np.linspace(0, 65535, 96 * 128).reshape(96, 128).astype(np.uint16)
  path = tmp_path / "grey16.png"
  Image.fromarray(ramp).save(path)
  expected = np.round(ramp / 257.0).astype(np.uint8)
  stream, back = tmp_path / "g.jcx", tmp_path / "g.png"
  assert _run(["compress", "--model", model_name, path, stream], capsys)[0] == 0
  assert _run(["decompress", stream, back], capsys)[0] == 0
  decoded = np.asarray(Image.open(back).convert("L"), np.float64)
  psnr = 10 * np.log10(255 ** 2 / np.mean((decoded - expected) ** 2))
  assert psnr > 25, psnr                                         # was 4.6 dB


def test_other_modes(tmp_path):
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 255
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  np.testing.assert_array_equal(cli._read_image(str(tmp_path / "a.png"))[0, 0], [200, 0, 0])
  Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(tmp_path / "l.png")
  assert cli._read_image(str(tmp_path / "l.png")).shape == (4, 4, 3)
  Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(tmp_path / "f.tif")
  with pytest.raises(ValueError, match="mode F"):
    cli._read_image(str(tmp_path / "f.tif"))


def test_output_over_the_input_is_refused(model_name, tmp_path, capsys, shared_data):
  # Issue 14.3: `compress x.png x.png` replaced the PNG with the stream.
  image = tmp_path / "x.png"
  Image.open(shared_data / "kodak" / "kodim01.png").crop((0, 0, 64, 64)).save(image)
  original = image.read_bytes()
  os.link(image, tmp_path / "hard-link.png")
  for out in (image, tmp_path / "." / "x.png", tmp_path / "hard-link.png"):
    code, _, err = _run(["compress", "--model", model_name, image, out], capsys)
    assert code == 2 and _one_line(err) and "is the input file" in err
  assert image.read_bytes() == original
  stream = tmp_path / "x.jcx"
  assert _run(["compress", "--model", model_name, image, stream], capsys)[0] == 0
  code, _, err = _run(["decompress", stream, stream], capsys)
  assert code == 2 and _one_line(err)
  # Outputs are written atomically, with ordinary permissions (not mkstemp's 0600).
  assert stat.S_IMODE(stream.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_image_and_stream_size_limits(model_name, tmp_path, capsys):
  big = tmp_path / "big.png"
  Image.new("RGB", (300, 200)).save(big)
  code, _, err = _run(["compress", "--model", model_name, "--max-pixels", "50000", big,
                       tmp_path / "o.jcx"], capsys)
  assert code == 1 and _one_line(err) and "60000 pixels is above the limit of 50000" in err
  # Pillow's own bomb limit becomes a one-line error too (issue 14.9).
  old = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = 20000                                  # error above 2x this
  try:
    code, _, err = _run(["compress", "--model", model_name, big, tmp_path / "o.jcx"], capsys)
  finally:
    Image.MAX_IMAGE_PIXELS = old
  assert code == 1 and _one_line(err) and "decompression bomb" in err
  # A forged stream claiming a huge image is refused from its header.
  model, params, _ = pretrained.load(model_name)
  tables = compression.coding_tables(model, params)
  header = bitstream.Header(model_name, "hyperprior", model.gdn, model.num_filters,
                            model.num_latent, tables.fingerprint, 60000, 60000)
  bomb = tmp_path / "bomb.jcx"
  bomb.write_bytes(bitstream.pack(header, b"", b""))
  code, _, err = _run(["decompress", bomb, tmp_path / "o.png"], capsys)
  assert code == 1 and _one_line(err) and "above the limit" in err
  with pytest.raises(SystemExit) as e:                          # argparse: usage error
    cli.main(["decompress", "--max-pixels", "0", str(bomb), str(tmp_path / "o.png")])
  err = capsys.readouterr().err
  assert e.value.code == 2 and _one_line(err) and "positive integer" in err


def test_unknown_output_format_and_debug(model_name, tmp_path, capsys, shared_data):
  image = tmp_path / "x.png"
  Image.open(shared_data / "kodak" / "kodim01.png").crop((0, 0, 64, 64)).save(image)
  stream = tmp_path / "x.jcx"
  _run(["compress", "--model", model_name, image, stream], capsys)
  code, _, err = _run(["decompress", stream, tmp_path / "out.xyz"], capsys)
  assert code == 2 and _one_line(err) and "'.xyz'" in err
  assert not (tmp_path / "out.xyz").exists()
  code, _, err = _run(["decompress", stream, tmp_path / "out.xyz", "--debug"], capsys)
  assert code == 2 and "Traceback" in err


def test_a_checkpoint_of_another_task_is_one_line(tmp_path, capsys, shared_data):
  # Issue 14.9: `--checkpoint` of a classification run.
  config = {"task": "classification", "codec": {"architecture": "hyperprior", "quality": 1,
                                                "num_filters": 0, "num_latent": 0,
                                                "gdn": "classic", "lmbda": 0.0}}
  (tmp_path / "config.json").write_text(json.dumps(config))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  ckpt.save(4, {"params": {"conv": {"kernel": np.zeros((3, 3, 3, 16), np.float32)}}})
  ckpt.close()
  image = tmp_path / "x.png"
  Image.open(shared_data / "kodak" / "kodim01.png").crop((0, 0, 64, 64)).save(image)
  code, _, err = _run(["compress", "--checkpoint", tmp_path, image, tmp_path / "o.jcx"], capsys)
  assert code == 1 and _one_line(err) and "does not hold a hyperprior codec" in err


def test_list_long_says_what_each_model_was_trained_on(capsys):
  # The cifar10-bls-* models are trained on whole 32x32 images (~13 dB on photos):
  # `list --long` says so, from each model's metadata; plain `list` stays one name a line.
  code, out, _ = _run(["list", "--long"], capsys)
  lines = dict(l.split("\t") for l in out.splitlines())
  assert code == 0 and set(lines) == set(pretrained.list_models())
  assert "128x128 crops (configs/bmshj2018.py)" in lines["hyperprior-q1"]
  for name in (n for n in lines if n.startswith("cifar10-bls")):
    assert "whole dataset images (crop=0)" in lines[name]
  assert _run(["list"], capsys)[1].splitlines() == pretrained.list_models()
