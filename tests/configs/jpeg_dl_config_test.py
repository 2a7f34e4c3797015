"""configs/jpeg_dl.py: every variant validates, and the article's tfds variants run
one training step end to end on tfds mock data (flow and shapes; no download)."""

import importlib.util
import pathlib
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcomp import config_lib
from jaxcomp import train

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("jpeg_dl", ROOT / "configs" / "jpeg_dl.py")
jpeg_dl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jpeg_dl)


@pytest.mark.parametrize("variant", jpeg_dl.variants())
def test_every_variant_validates(variant):
  c = config_lib.validate(jpeg_dl.get_config(f"variant={variant},init=quality"))
  assert c.model.jpeg_layer
  baseline = jpeg_dl.get_config(f"variant={variant},jpeg_layer=False")
  assert not baseline.model.jpeg_layer
  assert baseline.optim.to_dict() == c.optim.to_dict()   # same recipe both arms


def test_sensitivity_variants_demand_a_checkpoint():
  with pytest.raises(config_lib.ConfigError, match="sensitivity_checkpoint"):
    jpeg_dl.get_config("variant=cifar100_resnet32")


@pytest.mark.parametrize("variant, image_size", [
    pytest.param("cifar100_resnet32", 0, marks=pytest.mark.slow),   # ~60 s on 2 cores
    pytest.param("pets_preact_resnet18", 64, marks=pytest.mark.slow),
    pytest.param("imagenet_squeezenet1_1", 64, marks=pytest.mark.slow)])
def test_paper_variants_train_one_step_on_mock_data(tmp_path, variant, image_size):
  # 64x64 instead of 224x224 keeps the ImageNet-size models cheap on 2 CPU cores;
  # the code path (inception crop, LSQ init, hardness matching, b = 11) is the same.
  c = jpeg_dl.get_config(f"variant={variant},init={'lsq' if 'imagenet' in variant else 'quality'}")
  c.data.data_dir = str(tmp_path / "tfds")
  if image_size:
    c.data.image_size = image_size
  c.train.num_steps = 1
  c.train.batch_size = 8
  c.eval.batch_size = 8
  c.train.progress_bar = False
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    summary = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert summary["final_step"] == 1
  assert np.isfinite(summary["eval"]["loss"])
