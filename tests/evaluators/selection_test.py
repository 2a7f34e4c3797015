"""The selector report (mode "selection") on a trained run of the packaged CIFAR-10 sample.

Expected values: the run's classifier applied to each version directly
(`load_run` + `apply_fn`), `selection.selection_report` recomputed from the
saved arrays, the sample zip's own file sizes (read with zipfile, counted by
`selection.file_sizes`), and Pillow's PNG writer for datasets without files.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import zipfile

import jax
import ml_collections
import numpy as np
import pytest

from jaxcomp import config_lib, data as data_lib, selection
from jaxcomp.data import local
from jaxcomp.evaluators import EVALUATORS, selection as selection_eval
from jaxcomp.evaluators.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUALITIES = (90, 50, 10)


def _hrs(arg: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("hrs", ROOT / "configs" / "hrs.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg)
  c.hrs.qualities = QUALITIES
  c.hrs.batch_size = 20            # 48 images: chunks of 20, 20, 8
  return c


@pytest.fixture(scope="module")
def report(jpeg_dl_run, tmp_path_factory):
  out = tmp_path_factory.mktemp("selection")
  c = config_lib.validate(_hrs(f"checkpoint={jpeg_dl_run / 'base'}"))
  result = EVALUATORS.get("selection")(c, str(out))
  return result, out


def test_report_is_the_runs_classifier_on_every_version(jpeg_dl_run, report):
  result, out = report
  saved = np.load(out / "selection.npz")
  logits, labels = saved["logits"], saved["labels"]
  assert logits.shape == (1 + len(QUALITIES), 48, 10) and result["num_images"] == 48
  task, variables = load_run(jpeg_dl_run / "base")
  images, y = task.eval_ds.read(np.arange(48))
  np.testing.assert_array_equal(labels, y)
  versions = selection.jpeg_versions(images, QUALITIES)
  apply = jax.jit(task.apply_fn)
  for v in range(len(versions.images)):
    np.testing.assert_allclose(logits[v], apply(variables, versions.images[v] / np.float32(255)),
                               rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(saved["file_bytes"][1:], versions.file_bytes[1:])
  assert result["report"] == selection.selection_report(
      logits, labels, saved["file_bytes"], saved["payload_bytes"], QUALITIES)
  for k in ("top1", "top5"):        # HRS's optimality, on real logits
    assert result["report"]["hrs"][k] >= max(r[k] for r in result["report"].values())
  assert json.loads((out / "selection.json").read_text())["original_sizes"] == "stored files"
  assert "| hrs |" in (out / "selection.md").read_text()
  assert (out / "selection.png").stat().st_size > 0


def test_originals_are_sized_by_their_stored_files(report):
  result, out = report
  saved = np.load(out / "selection.npz")
  c = ml_collections.ConfigDict(result["config"])
  ds = data_lib.get_dataset(c.data, c.data.eval_split)
  with zipfile.ZipFile(local.SAMPLE_DIR / "cifar10_jpeg75_sample.zip") as z:
    names = sorted(n for n in z.namelist() if n.startswith("test/") and n.endswith(".jpg"))
    want = np.array([selection.file_sizes(z.read(names[i])) for i in ds.indices]).T
  np.testing.assert_array_equal(saved["file_bytes"][0], want[0])
  np.testing.assert_array_equal(saved["payload_bytes"][0], want[1])


def test_classifier_compiles_once_across_chunks():
  """The evaluator calls `classify_versions` once per chunk: one trace for them all."""
  traces = []

  def apply_fn(variables, x):
    traces.append(x.shape)
    return x.mean(axis=(1, 2)) @ variables

  w = np.eye(3, 6, dtype=np.float32)
  for seed in range(3):
    versions = np.random.default_rng(seed).integers(0, 256, (2, 5, 4, 4, 3), dtype=np.uint8)
    got = selection.classify_versions(apply_fn, w, versions, batch_size=4)
    np.testing.assert_allclose(got, (versions / np.float32(255)).mean(axis=(2, 3)) @ w,
                               rtol=1e-6)
  assert traces == [(4, 4, 4, 3)]


def test_resized_examples_fall_back_to_png_sizes():
  c = config_lib.base_config().data
  c.image_size = 16                      # read() resizes: the stored files are not the pixels
  assert selection_eval.stored_sizes(c, data_lib.get_dataset(c, "test")) is None


@pytest.mark.parametrize("change,match", [
    (dict(checkpoint=""), "hrs.checkpoint is empty"),
    (dict(qualities=(50, 90)), "hrs.qualities: qualities must be strictly decreasing"),
    (dict(qualities=(101,)), "hrs.qualities: .*1..100"),
])
def test_bad_settings(jpeg_dl_run, tmp_path, change, match):
  c = _hrs(f"checkpoint={jpeg_dl_run / 'base'}")
  c.hrs.update(change)
  with pytest.raises(config_lib.ConfigError, match=match):
    EVALUATORS.get("selection")(config_lib.validate(c), str(tmp_path))


def test_another_dataset_than_the_runs_is_refused(jpeg_dl_run, tmp_path):
  c = _hrs(f"checkpoint={jpeg_dl_run / 'base'}")
  c.data.name = "fashion_mnist_idx"
  with pytest.raises(config_lib.ConfigError, match="trained on 'cifar10_sample'"):
    EVALUATORS.get("selection")(config_lib.validate(c), str(tmp_path))
  c.data.name = "cifar10_sample"
  c.hrs.checkpoint = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="not a jaxcomp run directory"):
    EVALUATORS.get("selection")(config_lib.validate(c), str(tmp_path))
