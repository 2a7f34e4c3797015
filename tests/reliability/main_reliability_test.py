"""`python -m jaxcomp.main`: one line per user error, exit 2 (usage / config) or 1 (run).

Issue 14.9: unknown keys, missing paths, unusable workdirs, mode=evaluate
without a checkpoint and resuming another model all ended in tracebacks. Most
cases run `main` in this process on the toy task of conftest.py (through a
config file written here); one runs the real entry point.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from absl import flags

from jaxcomp import main as main_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]

TOY_CONFIG = '''
from jaxcomp.tasks import base

def get_config(arg=None):
  return base.TASKS.get("reliability_toy").config(num_steps=4, checkpoint_every_steps=2)
'''


@pytest.fixture
def run_main(tmp_path, toy, capsys, monkeypatch):
  """`run_main(*flags) -> (status, stderr)`: parses the flags and runs `main` in-process.

  ml_collections reads the `--config.*` overrides from `sys.argv`, so it is set too.
  """
  config = tmp_path / "toy_config.py"
  config.write_text(TOY_CONFIG)

  def run(*args, config_file=str(config)):
    argv = ["main", f"--config={config_file}", *args]
    monkeypatch.setattr(sys, "argv", argv)
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
      delattr(flags.FLAGS, name)       # the overrides a previous (failed) parse defined
    flags.FLAGS.unparse_flags()
    try:
      status = main_lib.main(main_lib.parse_flags(argv))
    except SystemExit as e:
      status = e.code
    finally:
      flags.FLAGS.unparse_flags()
    return status, capsys.readouterr().err

  return run


def _one_line(err: str) -> bool:
  return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_usage_and_config_errors_exit_2(run_main, tmp_path):
  work = f"--workdir={tmp_path / 'run'}"
  (tmp_path / "file").write_text("x")
  cases = [
      ((work, "--config.train.batchsize=3"), "unknown config key 'train.batchsize'"),
      ((work, "--config.model.jpeg.nope=3"), "unknown config key 'model.jpeg.nope'"),
      ((work, "--config.train.batch_size=abc"), "batch_size"),
      ((work, "--config.optim.learning_rate=nan"), "optim.learning_rate must be finite"),
      ((work, "--config.train.label_smoothing=2.0"), "train.label_smoothing must be <= 1"),
      ((work, "--config.model.name=resnet21"), "model.name='resnet21' is not one of"),
      ((work, "--config.mode=evaluate"), "mode=evaluate needs a checkpoint"),
      ((f"--workdir={tmp_path / 'file'}",), "is not a directory"),
      ((work, "unexpected"), "unexpected arguments"),
      (("--config.seed=1",), "workdir"),                       # a required flag missing
  ]
  for args, message in cases:
    status, err = run_main(*args)
    assert status == 2 and _one_line(err) and message in err, (args, err)
  status, err = run_main(work, config_file=str(tmp_path / "missing.py"))
  assert status == 2 and _one_line(err) and "missing.py" in err


def test_run_errors_exit_1_and_debug_shows_the_traceback(run_main, tmp_path):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  (tmp_path / "run" / "checkpoints").rmdir()
  (tmp_path / "run" / "checkpoints").write_text("x")
  status, err = run_main(f"--workdir={tmp_path / 'run'}")
  assert status == 1 and _one_line(err) and "cannot keep checkpoints" in err
  status, err = run_main(f"--workdir={tmp_path / 'run'}", "--debug")
  assert status == 1 and "Traceback" in err


@pytest.mark.slow
def test_divergence_and_resuming_another_run_are_one_line(run_main, tmp_path):
  status, err = run_main(f"--workdir={tmp_path / 'nan'}", "--config.optim.learning_rate=1e12")
  assert status == 1 and _one_line(err) and "non-finite loss or state" in err
  work = f"--workdir={tmp_path / 'run'}"
  status, err = run_main(work)
  assert status == 0, err
  status, err = run_main(work, "--config.train.batch_size=32", "--config.optim.name=adam",
                         "--config.train.num_steps=8")
  assert status == 2 and _one_line(err)
  assert "optim.name: 'momentum' -> 'adam'; train.batch_size: 16 -> 32" in err
  status, err = run_main(work, "--config.train.num_steps=6")       # a longer run is fine
  assert status == 0, err


def test_the_real_entry_point_prints_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "jaxcomp.main", "--config=configs/cifar10.py:runlocal=True",
       f"--workdir={tmp_path}", "--config.train.foo=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr == "error: unknown config key 'train.foo' (on the command line)\n"

