"""Public functions refuse inputs they cannot answer for (issue 14.7, 14.8, 14.12).

Each case used to return a meaningless result: an attack "succeeding" at eps = 0,
an all-NaN JPEG, a NaN image written as black, a NaN learning rate accepted.
The checks read concrete values only: traced tables and alpha under jit / grad
(JPEG-DL training) are covered by tests/codecs/jpeg_test.py and
tests/ops/quantization_test.py.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import attacks
from jaxcomp import config_lib
from jaxcomp.attacks import core
from jaxcomp.codecs import jpeg, jpeg_files
from jaxcomp.ops import quantization
from jaxcomp.ops.jpeg_tables import quality_tables


@functools.lru_cache(maxsize=None)
def _attacks_conftest():
  """tests/attacks/conftest.py as a module (its affine classifier serves here too)."""
  path = pathlib.Path(__file__).resolve().parents[1] / "attacks" / "conftest.py"
  spec = importlib.util.spec_from_file_location("attacks_conftest", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


_linear = _attacks_conftest().linear_apply


@pytest.fixture(scope="module")
def model():
  """`(params, images [6, 4, 4, 3], labels)` of the 5-class affine classifier."""
  _, params, x, y = _attacks_conftest().linear_model.__wrapped__()
  return params, x, y


def test_labels_outside_the_classes_are_refused(model):
  params, x, y = model
  assert core.num_classes(_linear, params, x) == 5
  for bad in (y.at[0].set(5), y.at[2].set(-1)):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
      core.validate(x, bad, eps=0.0, apply_fn=_linear, params=params)
    with pytest.raises(ValueError, match=r"target_labels must lie in \[0, 5\)"):
      core.validate(x, y, target_labels=bad, eps=0.0, apply_fn=_linear, params=params)
  core.validate(x, y, eps=0.0, apply_fn=_linear, params=params)


def test_attacks_refuse_labels_outside_the_classes(model):
  # Issue 14.8: at eps = 0 a label >= K is never the argmax, so the attack "succeeded".
  params, x, y = model
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
    attacks.fgsm(_linear, params, x, y.at[0].set(7), jax.random.key(0), eps=0.0)


def test_attacks_refuse_negative_labels(model):
  params, x, y = model
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
    attacks.fgsm(_linear, params, x, y.at[0].set(-1), jax.random.key(0), eps=0.0)


def test_non_finite_images_are_refused(model):
  params, x, y = model
  for bad in (x.at[0, 0, 0, 0].set(jnp.nan), x.at[1, 1, 1, 1].set(jnp.inf)):
    with pytest.raises(ValueError, match=r"finite and lie in \[0, 1\]"):
      attacks.fgsm(_linear, params, bad, y, jax.random.key(0), eps=0.0)
    with pytest.raises(ValueError, match=r"finite and lie in \[0, 1\]"):
      attacks.pgd(_linear, params, bad, y, jax.random.key(0), eps=0.1, num_steps=2)


@pytest.mark.parametrize("value", [0.0, -4.0, np.nan, np.inf])
def test_jpeg_refuses_non_positive_or_non_finite_tables(value):
  images = jnp.full((1, 16, 16, 3), 0.5, jnp.float32)
  luma, chroma = quality_tables(50)
  bad = np.asarray(luma, np.float32).copy()
  bad[3, 4] = value
  with pytest.raises(ValueError, match="luma table must be finite and > 0"):
    jpeg.jpeg(images, tables=(bad, chroma))
  with pytest.raises(ValueError, match="chroma table must be finite and > 0"):
    jpeg.jpeg_coefficients(images, tables=(luma, bad), quantizer="soft")
  with pytest.raises(ValueError, match="step sizes q must be finite and > 0"):
    quantization.quantize_dequantize(jnp.ones((8, 8)), jnp.asarray(bad))


@pytest.mark.parametrize("alpha", [0.0, -5.0, np.nan])
def test_soft_quantizer_refuses_non_positive_alpha(alpha):
  images = jnp.full((1, 16, 16, 3), 0.5, jnp.float32)
  with pytest.raises(ValueError, match="alpha must be finite and > 0"):
    jpeg.jpeg(images, quality=50, quantizer="soft", alpha=alpha)
  with pytest.raises(ValueError, match="alpha must be finite and > 0"):
    quantization.soft_quantize(jnp.ones((8, 8)), jnp.ones((8, 8)), alpha)


def test_encode_jpeg_refuses_nan_pixels():
  image = np.full((8, 8, 3), 0.5, np.float32)
  image[2, 3, 1] = np.nan                                # used to be written as black
  with pytest.raises(ValueError, match="finite and lie in"):
    jpeg_files.encode_jpeg(image, quality=90)
  with pytest.raises(ValueError, match="lie in 1..255"):
    jpeg_files.encode_jpeg(np.zeros((8, 8, 3), np.uint8), qtables=[np.zeros((8, 8), int)] * 2)


@pytest.mark.parametrize("key, value, message", [
    ("optim.learning_rate", float("nan"), "optim.learning_rate must be finite"),
    ("optim.learning_rate", float("inf"), "optim.learning_rate must be finite"),
    ("train.label_smoothing", 2.0, "train.label_smoothing must be <= 1"),
    ("train.ema_decay", 1.0, "train.ema_decay must be < 1"),
    ("jpeg_optim.b2", float("nan"), "jpeg_optim.b2 must be finite"),
])
def test_validation_rejects_nan_and_out_of_range_hyper_parameters(key, value, message):
  c = config_lib.base_config()
  section, name = key.split(".")
  c[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)
