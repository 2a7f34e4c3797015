"""configs/compressed_training.py: the data names of each setting, every experiment validates,
and the codec experiment (rate-distortion on whole dataset images, `codec.crop = 0`) runs."""

import importlib.util
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcomp import config_lib, data, train
from jaxcomp.codecs import pretrained

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ct", ROOT / "configs" / "compressed_training.py")
ct = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ct)


@pytest.mark.parametrize("arg,name,n", [
    ("", "cifar10_jpeg75", 0),
    ("codec=jpeg:20", "compressed_train:cifar10_jpeg75:jpeg:20", 0),
    ("codec=jpeg:5:444,test=compressed", "compressed:cifar10_jpeg75:jpeg:5:444", 0),
    ("codec=bls:0.012,train_examples=500",
     "compressed_train:cifar10_jpeg75:bls2017:cifar10-bls-0.012", 500),
    ("codec=noise:0.3", "corrupted_train:cifar10_jpeg75:noise:0.3", 0),
    ("codec=blur:9,test=compressed", "corrupted:cifar10_jpeg75:blur:9", 0),
    ("codec=bls:0.012+bls:0.1,train_examples=500",
     "union:compressed_train:subset:500:cifar10_jpeg75:bls2017:cifar10-bls-0.012|"
     "compressed_train:subset:500:cifar10_jpeg75:bls2017:cifar10-bls-0.1", 0),
    ("source=fashion_mnist_idx,codec=jpeg:10", "compressed_train:fashion_mnist_idx:jpeg:10", 0),
])
def test_data_names(arg, name, n):
  c = config_lib.validate(ct.get_config(arg))
  assert c.data.name == name and c.data.num_train_examples == n
  assert c.optim.learning_rate == 0.01 and c.optim.weight_decay == 5e-4        # thesis Sec. 3.2
  assert c.optim.schedule == "constant" and c.train.epochs == 30 and c.train.batch_size == 128
  assert c.model.name == "thesis_vgg11" and c.data.augment == "cifar"


def test_other_experiments_validate():
  c = config_lib.validate(ct.get_config("experiment=robustness,checkpoints=runs/*"))
  assert c.mode == "corruption_robustness" and c.robustness.checkpoints == "runs/*"
  assert config_lib.validate(ct.get_config("experiment=report")).mode == "compressed_training"
  for label in ct.BLS_RATES:
    c = config_lib.validate(ct.get_config(f"experiment=codec,rate={label}"))
    assert c.task == "rate_distortion" and c.codec.crop == 0
    assert c.codec.lmbda == ct.BLS_RATES[label][1] and c.codec.architecture == "bls2017"
    assert c.train.num_steps == ct.BLS_RATES[label][2]
  assert ct.get_config("experiment=codec,rate=0.001,steps=7").train.num_steps == 7
  tiny = config_lib.validate(ct.get_config("variant=tinyimagenet,model=thesis_res18"))
  assert tiny.train.batch_size == 200 and tiny.data.augment == "flip"
  assert config_lib.validate(ct.get_config("variant=tinyimagenet")).train.batch_size == 300
  for bad in ("codec=bls:0.2", "test=both", "experiment=x", "variant=x",
              "codec=bls:0.012+bls:0.1,test=compressed"):
    with pytest.raises(config_lib.ConfigError):
      ct.get_config(bad)


def test_shipped_codecs_are_the_thesis_rates():
  """Every shipped cifar10-bls-<label> model was trained with the lambda the config gives."""
  shipped = [n for n in pretrained.list_models() if n.startswith("cifar10-bls-")]
  assert shipped
  for name in shipped:
    _, _, meta = pretrained.load(name)
    _, lmbda, steps = ct.BLS_RATES[name[len("cifar10-bls-"):]]
    assert meta["lmbda"] == lmbda and meta["step"] == steps
    assert meta["architecture"] == "bls2017" and meta["num_filters"] == 64


@pytest.mark.slow      # compiles a rate-distortion train and eval step (724 s at load 40)
def test_codec_experiment_trains_on_whole_dataset_images(tmp_path):
  c = config_lib.validate(ct.get_config("experiment=codec,runlocal=True,source=cifar10_sample"))
  summary = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert summary["final_step"] == 2
  assert summary["eval"]["num_images"] == 16 and np.isfinite(summary["eval"]["bpp"])
  assert summary["eval"]["bpp"] > 0 and 0 < summary["eval"]["psnr"] < 60


@pytest.mark.slow
def test_tinyimagenet_setting_trains_one_step_on_mock_data(tmp_path):
  c = ct.get_config("variant=tinyimagenet,codec=jpeg:20,model=thesis_vgg11_5,runlocal=True")
  c.data.data_dir = str(tmp_path / "tfds")
  c.data.cache_dir = str(tmp_path / "cache")
  c.train.num_steps = 1
  c.train.batch_size = c.eval.batch_size = 8
  c.data.num_train_examples = c.data.num_eval_examples = 8
  c.train.progress_bar = False
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    assert data.get_dataset(c.data, "train").image_shape == (64, 64, 3)
    summary = train.train_and_evaluate(config_lib.validate(c), str(tmp_path / "run"))
  assert summary["final_step"] == 1 and np.isfinite(summary["eval"]["loss"])
