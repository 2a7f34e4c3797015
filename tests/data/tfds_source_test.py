"""tfds datasets without downloads: a tiny ArrayRecord dataset built here (the real
`as_data_source` path, no TensorFlow) and `tfds.testing.mock_data` for the named
datasets (their features and class counts come from the tfds code)."""

from __future__ import annotations

import io
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxcomp import data


def _tiny_image(i: int) -> np.ndarray:
  """Example i: height 8 + i (so each is recognisable), width 10, seeded pixels."""
  return np.random.default_rng(i).integers(0, 256, (8 + i, 10, 3), dtype=np.uint8)


class JaxcompTinyImages(tfds.core.GeneratorBasedBuilder):
  """6 train / 3 test variable-size images in 3 classes."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(range(6)), "test": self._generate_examples(range(6, 9))}

  def _generate_examples(self, ids):
    for i in ids:
      buf = io.BytesIO()   # encoded PNG: encoding arrays would need TensorFlow
      Image.fromarray(_tiny_image(i)).save(buf, format="PNG")
      buf.seek(0)
      yield i, {"image": buf, "label": i % 3}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("tfds")
  JaxcompTinyImages(data_dir=str(path), file_format="array_record").download_and_prepare()
  return str(path)


def test_array_record_dataset(tiny_dir, data_config):
  c = data_config(name="tfds:jaxcomp_tiny_images", data_dir=tiny_dir, image_size=16)
  ds = data.get_dataset(c, "train")
  assert len(ds) == 6 and ds.num_classes == 3 and ds.class_names == ("a", "b", "c")
  # Unknown name, variable size: ImageNet statistics, Inception augmentation, 0.875 crop.
  assert ds.image_shape == (16, 16, 3) and ds.default_augment == "inception"
  assert ds.mean == (0.485, 0.456, 0.406) and ds.eval_crop == 0.875
  for k in range(6):   # stored order is tfds's shuffle; find each by its height
    ex = ds[k]
    i = ex["image"].shape[0] - 8
    np.testing.assert_array_equal(ex["image"], _tiny_image(i))   # lossless PNG round trip
    assert ex["label"] == i % 3
  batch = next(data.train_batches(ds, batch_size=4, seed=0))
  assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.uint8
  test = list(data.eval_batches(data.get_dataset(c, "test"), batch_size=2))
  assert [b["mask"].tolist() for b in test] == [[True, True], [True, False]]
  assert len(data.get_dataset(c, "train[:50%]")) == 3   # tfds split strings pass through


def test_tfrecord_without_tensorflow_says_how_to_convert(tiny_dir, data_config):
  c = data_config(name="tfds:jaxcomp_tiny_images", data_dir=tiny_dir)
  with mock.patch.object(JaxcompTinyImages, "as_data_source", side_effect=NotImplementedError):
    with pytest.raises(RuntimeError, match="tfds convert_format"):
      data.get_dataset(c, "train")


@pytest.mark.parametrize("name,num_classes,shape,augment,mean", [
    ("cifar10", 10, (32, 32, 3), "cifar", 0.4914),
    ("cifar100", 100, (32, 32, 3), "cifar", 0.5071),
    ("fashion_mnist", 10, (28, 28, 1), "cifar", 0.2860),
    ("imagenet2012", 1000, (224, 224, 3), "inception", 0.485),
    ("oxford_flowers102", 102, (224, 224, 3), "inception", 0.485),
    ("stanford_dogs", 120, (224, 224, 3), "inception", 0.485),
    ("caltech_birds2011", 200, (224, 224, 3), "inception", 0.485),
    ("oxford_iiit_pet", 37, (224, 224, 3), "inception", 0.485),
])
def test_named_datasets_with_mock_data(data_config, name, num_classes, shape, augment, mean):
  # Class counts: the tfds catalog pages of each dataset. mock_data gives random
  # examples; `is_prepared` is patched because mocked data has no files.
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    ds = data.get_dataset(data_config(name=f"tfds:{name}", data_dir="gs://bucket/tfds"), "train")
    assert (len(ds), ds.num_classes, ds.image_shape) == (4, num_classes, shape)
    assert ds.default_augment == augment and ds.mean[0] == mean
    batch = next(data.train_batches(ds, batch_size=2, seed=0, num_threads=0))
    assert batch["image"].shape == (2, *shape) and batch["label"].max() < num_classes


def test_errors(data_config, tmp_path):
  with pytest.raises(FileNotFoundError, match=f"not prepared in {tmp_path}.*never downloads.*tfds build"):
    data.get_dataset(data_config(name="tfds:cifar10", data_dir=str(tmp_path)), "train")
  assert not any(tmp_path.iterdir())   # nothing was downloaded or created
  with pytest.raises(ValueError, match="needs 'image' and 'label'"):
    data.get_dataset(data_config(name="tfds:div2k", data_dir=str(tmp_path)), "train")
  with pytest.raises(ValueError, match="needs a tfds dataset name"):
    data.get_dataset(data_config(name="tfds:"), "train")
