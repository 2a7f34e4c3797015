"""Tests of the `corrupted:` sources and the thesis's noise / blur baselines (Table 4.1).

References: `corruptions.corrupt` (tested against the CIFAR-10-C constants in
corruptions_test.py), scipy.ndimage.gaussian_filter for the blur, the sample
standard deviation for the noise, OpenCV's documented sigma rule
(`cv2.getGaussianKernel`: 0.3 ((k - 1) / 2 - 1) + 0.8).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.ndimage

from jaxcomp import data
from jaxcomp.data import corrupted, corruptions, derived
from compressed_test import write_folder  # pytest puts tests/data on sys.path


@pytest.fixture(scope="module")
def folder(tmp_path_factory, sample):
  return write_folder(tmp_path_factory.mktemp("folder"), sample, {"train": 2, "test": 2})


@pytest.fixture
def config(data_config, folder, tmp_path):
  return lambda name, **kw: data_config(**{"name": name, "path": str(folder),
                                           "cache_dir": str(tmp_path), **kw})


@pytest.mark.parametrize("rest,expected", [
    ("tfds:cifar10:fog:3", ("tfds:cifar10", "fog", 3)),
    ("cifar10_jpeg75:noise:0.05", ("cifar10_jpeg75", "noise", 0.05)),
    ("cifar10_jpeg75:blur:9", ("cifar10_jpeg75", "blur", 9)),
])
def test_parse(rest, expected):
  assert corrupted.parse(rest) == expected


@pytest.mark.parametrize("rest,match", [
    ("c:fog:0", "severity must be in 1..5"), ("c:fog:6", "severity must be in 1..5"),
    ("c:fog:x", "severity"), ("c:rain:1", "unknown corruption 'rain'.*gaussian_noise.*snow"),
    ("c:noise:0", "sigma must be a number > 0"), ("c:noise:-1", "sigma"), ("c:noise:nan", "sigma"),
    ("c:blur:4", "odd and >= 3"), ("c:blur:1", "odd and >= 3"), ("fog:3", "expected corrupted:"),
])
def test_bad_names(rest, match):
  with pytest.raises(ValueError, match=match):
    corrupted.parse(rest)


def test_unknown_corruption_writes_nothing(config, tmp_path):
  with pytest.raises(ValueError, match="unknown corruption"):
    data.get_dataset(config("corrupted:image_folder:rain:1"), "test")
  assert not list(tmp_path.glob("corrupted*"))


@pytest.mark.parametrize("name,level", [("impulse_noise", 5), ("saturate", 1), ("noise", 0.3)])
def test_set_is_the_corruption_of_its_base(config, name, level):
  ds = data.get_dataset(config(f"corrupted:image_folder:{name}:{level}"), "test")
  images, labels = data.get_dataset(config("image_folder"), "test").read(np.arange(20))
  seed = corrupted.seed_of(name, level)
  if name == "noise":
    expected = corrupted.gaussian_noise(images, sigma=level, seed=seed)
  else:
    expected = corruptions.corrupt(images, name, level, seed=seed)
  np.testing.assert_array_equal(ds.source.images, np.asarray(expected))
  np.testing.assert_array_equal(ds.source.labels, labels)
  assert ds.source.summary["num_examples"] == 20 and "bpp" not in ds.source.summary


def test_train_only_keeps_the_original_test_split(config):
  c = config("corrupted_train:image_folder:blur:3")
  assert data.get_dataset(c, "test").name == "image_folder"
  train = data.get_dataset(c, "train")
  images, _ = data.get_dataset(config("image_folder"), "train").read(np.arange(20))
  np.testing.assert_array_equal(train.source.images,
                                np.asarray(corrupted.gaussian_blur(images, kernel_size=3)))


def test_noise_baseline_standard_deviation_and_chunking():
  """Flat grey 128: the added noise has sd sigma * 255 (within sampling error, 24,576 draws)."""
  grey = np.full((8, 32, 32, 3), 128, np.uint8)
  for sigma in (0.01, 0.05, 0.1):
    out = np.asarray(corrupted.gaussian_noise(grey, sigma=sigma, seed=3))   # one compilation
    noise = out.astype(np.float64) - 128
    # sd of rounded N(0, s^2): sqrt(s^2 + 1/12); standard error of an sd estimate ~ sd/sqrt(2n).
    expected = np.sqrt((sigma * 255) ** 2 + 1 / 12)
    assert abs(noise.std() - expected) < 4 * expected / np.sqrt(2 * noise.size), sigma
    assert abs(noise.mean()) < 4 * expected / np.sqrt(noise.size)
  big = np.asarray(corrupted.gaussian_noise(grey, sigma=1.0, seed=3))
  assert set(np.unique(big)) <= set(range(256)) and big.min() == 0 and big.max() == 255  # clipped
  whole = np.asarray(corrupted.gaussian_noise(grey, sigma=0.1, seed=5))
  parts = [np.asarray(corrupted.gaussian_noise(grey[k:k + 3], sigma=0.1, seed=5, start_index=k))
           for k in (0, 3, 6)]
  np.testing.assert_array_equal(whole, np.concatenate(parts))


@pytest.mark.parametrize("k,sigma", [(3, 0.8), (5, 1.1), (7, 1.4), (9, 1.7)])
def test_blur_baseline_is_scipys_gaussian_with_opencvs_sigma(k, sigma):
  assert np.isclose(corrupted.blur_sigma(k), sigma)
  rng = np.random.default_rng(k)
  images = rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
  out = np.asarray(jax.jit(lambda x: corrupted.gaussian_blur(x, kernel_size=k))(images))
  ref = scipy.ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0),
                                      mode="nearest", truncate=(k // 2) / sigma)
  assert np.abs(out.astype(np.float64) - ref).max() <= 0.5 + 1e-3    # rounded, float32


def test_levels_and_splits_with_a_dot_keep_their_own_cache_files(config, tmp_path):
  """"noise:0.05" / "noise:0.3", train / test: four sets, four files (not one per "noise_0")."""
  sets = {(level, split): data.get_dataset(config(f"corrupted:image_folder:noise:{level}"), split)
          for level in ("0.05", "0.3") for split in ("train", "test")}
  files = sorted(p.name for p in tmp_path.glob("corrupted_image_folder_noise_*.npz"))
  assert len(files) == 4 and all(f"-{s}-" in f for f, s in zip(files, ["test", "train"] * 2))
  images = [ds.source.images for ds in sets.values()]
  assert not any(np.array_equal(a, b) for i, a in enumerate(images) for b in images[i + 1:])
  for (level, split), ds in sets.items():
    again = data.get_dataset(config(f"corrupted:image_folder:noise:{level}"), split)
    np.testing.assert_array_equal(again.source.images, ds.source.images)


def test_subset_and_union_sources(config):
  c = config("union:subset:6:image_folder|compressed_train:subset:6:image_folder:jpeg:10")
  train = data.get_dataset(c, "train")
  part = data.get_dataset(config("subset:6:image_folder"), "train")
  coded = data.get_dataset(config("compressed_train:subset:6:image_folder:jpeg:10"), "train")
  assert len(part) == 6 and len(train) == 12 and train.name.startswith("union:")
  np.testing.assert_array_equal(train.source.images[:6], part.read(np.arange(6))[0])
  np.testing.assert_array_equal(train.source.images[6:], coded.source.images)
  np.testing.assert_array_equal(train.source.labels[6:], train.source.labels[:6])
  assert data.get_dataset(c, "test").name == "image_folder"          # the first part's
  with pytest.raises(ValueError, match="num_train_examples = 0"):
    data.get_dataset(config(c.name, num_train_examples=4), "train")
  for bad in ("union:image_folder", "subset:0:image_folder", "subset:x:image_folder"):
    with pytest.raises(ValueError, match="expected"):
      data.get_dataset(config(bad), "train")


def test_in_batches_pads_to_one_shape():
  shapes = []

  def fn(x, start):
    shapes.append((x.shape, start))
    return {"y": x * 2}

  out = derived.in_batches(fn, np.arange(10), start=100, batch_size=4)
  np.testing.assert_array_equal(out["y"], np.arange(10) * 2)
  assert shapes == [((4,), 100), ((4,), 104), ((4,), 108)]
