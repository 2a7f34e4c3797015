"""The registered datasets on real data: counts, shapes, labels, pixels, errors.

Expected counts: ../shared/data/README.md (CIFAR-10 50,000 / 10,000 in 10
balanced classes; Fashion-MNIST 60,000 / 10,000, balanced) and
jaxcomp/data/sample/README.md (1,000 / 200 per class).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from jaxcomp import data
from jaxcomp.data import make_sample

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")


def _check(ds, n, per_class, shape, num_classes):
  assert len(ds) == n and ds.image_shape == shape and ds.num_classes == num_classes
  labels = ds.source.labels if ds.indices is None else ds.source.labels[ds.indices]
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels, minlength=num_classes), [per_class] * num_classes)
  assert ds.source.images.dtype == np.uint8 and ds.source.images.shape == (n, *shape)


@pytest.mark.parametrize("split,n,per_class", [("train", 50000, 5000), ("test", 10000, 1000)])
def test_cifar10_jpeg75(cifar, split, n, per_class):
  ds = cifar[split]
  _check(ds, n, per_class, (32, 32, 3), 10)
  assert ds.class_names == CIFAR_CLASSES
  assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.default_augment == "cifar"


def test_cifar10_jpeg75_pixels_equal_pillow(cifar, shared_data):
  """Example i is the i-th member of `test/` in sorted order, decoded by Pillow."""
  with zipfile.ZipFile(shared_data / "cifar10_jpeg75.zip") as zf:
    names = sorted(n for n in zf.namelist() if n.startswith("test/") and n.endswith(".jpg"))
    for i in (0, 1234, 9999):
      ref = np.asarray(Image.open(io.BytesIO(zf.read(names[i]))).convert("RGB"))
      np.testing.assert_array_equal(cifar["test"][i]["image"], ref)
      assert cifar["test"][i]["label"] == CIFAR_CLASSES.index(names[i].split("/")[1])


@pytest.mark.parametrize("split,n,per_class", [("train", 10000, 1000), ("test", 2000, 200)])
def test_sample(sample, split, n, per_class):
  _check(sample[split], n, per_class, (32, 32, 3), 10)
  assert sample[split].class_names == CIFAR_CLASSES


def test_sample_is_the_first_images_of_the_shared_zip(sample, cifar):
  """Sample test example i (class c, j-th of its class) = j-th test image of class c."""
  full = cifar["test"].source
  for i in (0, 199, 200, 1999):
    c, j = divmod(i, 200)
    np.testing.assert_array_equal(sample["test"].source.images[i], full.images[c * 1000 + j])


def test_sample_is_reproducible_and_small(tmp_path, shared_data):
  total = make_sample.build(shared_data, tmp_path)
  assert total < 20 * 2**20
  for name in (make_sample.SAMPLE_ZIP, "kodak/kodim15.png", "kodak/kodim23.png", "README.md"):
    assert (tmp_path / name).read_bytes() == (make_sample.SAMPLE_DIR / name).read_bytes(), name


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_idx(data_config, split, n):
  ds = data.get_dataset(data_config(name="fashion_mnist_idx"), split)   # found via ../shared/data
  _check(ds, n, n // 10, (28, 28, 1), 10)
  assert ds.mean == (0.2860,) and ds.class_names[0] == "T-shirt/top"


def test_subset_is_fixed_and_seeded(data_config):
  c = data_config(num_train_examples=100, num_eval_examples=30)
  a, b = data.get_dataset(c, "train"), data.get_dataset(c, "train")
  assert len(a) == 100 and len(data.get_dataset(c, "test")) == 30
  np.testing.assert_array_equal(a.indices, b.indices)
  # Seed 0 permutation of the 10,000 sample examples, first 100, sorted.
  np.testing.assert_array_equal(a.indices, np.sort(np.random.default_rng(0).permutation(10000)[:100]))
  np.testing.assert_array_equal(a[5]["image"], a.source.images[a.indices[5]])
  with pytest.raises(ValueError, match="cannot take a subset of 20000"):
    data.get_dataset(data_config(num_train_examples=20000), "train")


def test_image_size_resizes(data_config):
  ds = data.get_dataset(data_config(image_size=40), "test")
  images, _ = ds.read(np.arange(3))
  assert ds.image_shape == (40, 40, 3) and images.shape == (3, 40, 40, 3)


def test_missing_data_errors(data_config, tmp_path, monkeypatch):
  missing = tmp_path / "nothing.zip"
  with pytest.raises(FileNotFoundError, match=f"{missing}.*data.path.*JAXCOMP_SHARED_DATA.*cifar10_sample"):
    data.get_dataset(data_config(name="cifar10_jpeg75", path=str(missing)), "train")
  # Search order: $JAXCOMP_SHARED_DATA, ../shared/data from the current directory, ...
  monkeypatch.setenv("JAXCOMP_SHARED_DATA", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  assert data.local.shared_data_dirs()[:2] == [tmp_path, (tmp_path / "../shared/data").resolve()]
  # ... and beside the checkout, where the data is; hide it: every place is named.
  monkeypatch.setattr(data.local, "shared_data_dirs", lambda: [tmp_path, tmp_path / "x"])
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'fashion_mnist'}, {tmp_path / 'x'}"):
    data.get_dataset(data_config(name="fashion_mnist_idx"), "train")


def test_bad_config_errors(data_config):
  with pytest.raises(KeyError, match="unknown dataset 'cifar11'.*cifar10_sample"):
    data.get_dataset(data_config(name="cifar11"), "train")
  with pytest.raises(ValueError, match="needs data.path"):
    data.get_dataset(data_config(name="image_folder"), "train")
  with pytest.raises(ValueError, match="needs data.path"):
    data.get_dataset(data_config(name="idx"), "train")
  with pytest.raises(FileNotFoundError, match="no images under 'validation/<class>/'"):
    data.get_dataset(data_config(), "validation")
