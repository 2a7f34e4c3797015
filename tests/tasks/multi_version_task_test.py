"""The 11-input network's task (paper 003) through the real trainer, and configs/hrs.py.

Expected values: the trained classifier's own checkpoint (the trunk must be
bit-identical to it after training), `selection.jpeg_versions` (the versions
the task feeds must be the selectors' versions), and the configs' own fields.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcomp import checkpoint, config_lib, parallel, selection, train
from jaxcomp.tasks import multi_version

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUALITIES = (90, 50, 10)


def _hrs(arg: str):
  spec = importlib.util.spec_from_file_location("hrs", ROOT / "configs" / "hrs.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory) -> pathlib.Path:
  """A tiny classification run (C^1(4), 2 steps on the packaged CIFAR-10 sample)."""
  c = config_lib.base_config()
  c.model.name = "convnet"
  c.model.width = 4
  c.train.num_steps = 2
  c.train.batch_size = 16
  c.train.progress_bar = False
  c.data.num_train_examples = 64
  c.data.num_eval_examples = 16
  c.eval.batch_size = 16
  workdir = tmp_path_factory.mktemp("classifier")
  train.train_and_evaluate(c, str(workdir))
  return workdir


def _train_config(run: pathlib.Path, fusion: str = "weighted"):
  c = _hrs(f"checkpoint={run},variant=train,fusion={fusion}")
  c.hrs.qualities = QUALITIES
  c.train.num_steps = 3
  c.train.batch_size = 16
  c.train.progress_bar = False
  c.eval.batch_size = 16
  c.optim.weight_decay = 0.1        # a frozen group must hold even against weight decay
  return c


def test_config_copies_the_run_and_validates(classifier_run):
  c = config_lib.validate(_hrs(f"checkpoint={classifier_run},variant=train"))
  assert (c.task, c.mode, c.model.name, c.model.width) == ("multi_version", "train_and_evaluate",
                                                           "convnet", 4)
  assert c.data.num_train_examples == 64 and c.optim_groups == (("^trunk/", "frozen"),)
  report = config_lib.validate(_hrs(f"checkpoint={classifier_run}"))
  assert report.mode == "selection" and report.hrs.checkpoint == str(classifier_run)
  with pytest.raises(config_lib.ConfigError, match="variant='nope'"):
    _hrs("variant=nope")


@pytest.mark.parametrize("fusion", ["weighted", pytest.param("concat", marks=pytest.mark.slow)])
def test_trunk_is_bit_identical_after_training_through_the_trainer(classifier_run, tmp_path,
                                                                   fusion):
  summary = train.train_and_evaluate(_train_config(classifier_run, fusion), str(tmp_path))
  assert summary["final_step"] == 3
  assert set(summary["eval"]) >= {"accuracy", "top5", "loss"}
  assert 0 <= summary["eval"]["accuracy"] <= summary["eval"]["top5"] <= 1
  _, trained, _ = checkpoint.read_run(classifier_run)
  _, state, _ = checkpoint.read_run(tmp_path)
  want = checkpoint.eval_variables(trained)
  got = {"params": state["params"]["trunk"],
         "batch_stats": state["collections"]["batch_stats"]["trunk"]}
  for collection in ("params", "batch_stats"):
    flat_got = dict(_leaves(got[collection]))
    flat_want = dict(_leaves(want[collection]))
    assert flat_got.keys() == flat_want.keys()
    for k in flat_want:
      assert flat_got[k].dtype == flat_want[k].dtype
      np.testing.assert_array_equal(flat_got[k], flat_want[k], err_msg=f"{collection}/{k}")
  head = state["params"]["head"]["kernel"]
  assert head.shape[0] == (4 * 32 * 32) * (1 if fusion == "weighted" else 1 + len(QUALITIES))
  if fusion == "weighted":               # initialised to 0 (the mean); trained, it moved
    assert np.abs(state["params"]["version_logits"]).max() > 0


def _leaves(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}", np.asarray(v)


def test_batches_are_the_selectors_versions(classifier_run):
  c = config_lib.validate(_train_config(classifier_run))
  task = multi_version.MultiVersionTask(c, parallel.create_mesh(1))
  batch = next(task.train_iterator(seed=0, start_step=0))
  assert batch["image"].shape == (16, 1 + len(QUALITIES), 32, 32, 3)
  assert batch["image"].dtype == np.uint8
  want = selection.jpeg_versions(batch["image"][:, 0], QUALITIES).images       # [V, B, ...]
  np.testing.assert_array_equal(batch["image"], np.moveaxis(want, 0, 1))


@pytest.mark.slow        # the model-level check runs by default: tests/models/multi_version_test.py
def test_no_gradient_reaches_the_trunk(classifier_run):
  c = config_lib.validate(_train_config(classifier_run))
  task = multi_version.MultiVersionTask(c, parallel.create_mesh(1))
  batch = next(task.train_iterator(seed=0, start_step=0))
  variables = task.init_variables(jax.random.key(0), batch)
  grad = jax.jit(jax.grad(lambda p: task.loss({**variables, "params": p}, batch,
                                              jax.random.key(1), train=True)[0]))
  grads = grad(variables["params"])
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["trunk"]))
  assert np.abs(np.asarray(grads["head"]["kernel"])).max() > 0


@pytest.mark.parametrize("change,match", [
    (dict(qualities=(10, 50)), "hrs.qualities: qualities must be strictly decreasing"),
    (dict(qualities=(100, 0)), "hrs.qualities: .*1..100"),
    (dict(fusion="mean"), "hrs.fusion='mean' is not one of"),
    (dict(checkpoint=""), "hrs.checkpoint is empty"),
])
def test_bad_hrs_settings(classifier_run, change, match):
  c = _train_config(classifier_run)
  c.hrs.update(change)
  with pytest.raises(config_lib.ConfigError, match=match):
    multi_version.MultiVersionTask(config_lib.validate(c), parallel.create_mesh(1))


def test_another_model_or_no_run_is_refused(classifier_run, tmp_path):
  c = _train_config(classifier_run)
  c.model.width = 8
  with pytest.raises(config_lib.ConfigError, match=r"model differs from the run .* \['width'\]"):
    multi_version.MultiVersionTask(config_lib.validate(c), parallel.create_mesh(1))
  c = _train_config(classifier_run)
  c.hrs.checkpoint = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="not a jaxcomp run directory"):
    multi_version.MultiVersionTask(config_lib.validate(c), parallel.create_mesh(1))


@pytest.mark.slow        # a fresh interpreter; the same error is checked in-process above
def test_command_line_without_a_checkpoint_fails_clearly(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "jaxcomp.main", "--config=configs/hrs.py",
                         f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2
  assert "error: hrs.checkpoint is empty" in proc.stderr
