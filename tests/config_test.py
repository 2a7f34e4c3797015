"""Config files, command-line overrides and validation errors that name the key."""

import pathlib
import subprocess
import sys

import pytest

from jaxcomp import config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name, arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("path", sorted(p.stem for p in (ROOT / "configs").glob("*.py")))
def test_every_config_file_validates(path):
  config_lib.validate(_load(path))


def test_variant_arguments_are_typed_and_checked():
  c = _load("cifar10", "variant=full,epochs=3,batch_size=64")
  assert (c.data.name, c.train.epochs, c.train.batch_size) == ("cifar10_jpeg75", 3.0, 64)
  with pytest.raises(config_lib.ConfigError, match="unknown config argument 'epoch'"):
    _load("cifar10", "epoch=3")
  with pytest.raises(config_lib.ConfigError, match="batch_size='x' must be int"):
    _load("cifar10", "batch_size=x")
  with pytest.raises(config_lib.ConfigError, match="variant='nope'"):
    _load("cifar10", "variant=nope")


def test_validate_names_each_bad_key():
  c = config_lib.base_config()
  c.train.batch_size = 0
  c.optim.name = "adagrad"
  c.model.jpeg.q_min = 0.0
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  msg = str(e.value)
  assert "train.batch_size must be > 0" in msg
  assert "optim.name='adagrad' is not one of" in msg
  assert "model.jpeg.q_min must be > 0" in msg


def test_unknown_key_in_a_config_file_is_rejected():
  c = config_lib.base_config()
  c.train.batchsize = 32
  with pytest.raises(config_lib.ConfigError, match="unknown config key 'train.batchsize'"):
    config_lib.validate(c)


@pytest.mark.parametrize("override, message", [
    ("--config.train.batchsize=3", "batchsize"),
    ("--config.train.batch_size=abc", "batch_size"),
    ("--config.train.batch_size=-4", "train.batch_size must be > 0"),
])
def test_command_line_errors_name_the_key(tmp_path, override, message):
  proc = subprocess.run(
      [sys.executable, "-m", "jaxcomp.main", "--config=configs/cifar10.py:runlocal=True",
       f"--workdir={tmp_path}", override],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr + proc.stdout
