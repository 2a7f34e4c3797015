"""Local datasets: the packaged sample, the shared data, and any user's files.

Registered names:
  cifar10_sample     the CIFAR-10 (JPEG q75) sample shipped in the package
                     (10,000 train / 2,000 test; jaxcomp/data/sample/README.md).
  cifar10_jpeg75     `cifar10_jpeg75.zip` of the shared data (50,000 / 10,000).
  fashion_mnist_idx  the Fashion-MNIST IDX files of the shared data (60,000 / 10,000).
  image_folder       data.path: a directory or zip of `<split>/<class>/<image>`.
  idx                data.path: a folder of `<split>-images-idx3-ubyte[.gz]` and
                     `<split>-labels-idx1-ubyte[.gz]` ("test" also finds "t10k").

Shared data is found at data.path, else `$JAXCOMP_SHARED_DATA`, else
`../shared/data` relative to the current directory, else beside the checkout.
Decoded arrays are cached in data.cache_dir (`cache.cached_arrays`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Mapping

import ml_collections

from jaxcomp.data import readers
from jaxcomp.data.cache import cached_arrays, file_key
from jaxcomp.data.dataset import (CIFAR10_STATS, DATASETS, FASHION_MNIST_STATS, IMAGENET_EVAL_CROP,
                                  ArraySource, ImageDataset, RaggedSource, make_dataset)

SAMPLE_DIR = pathlib.Path(__file__).resolve().parent / "sample"
_READER_VERSION = "1"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
_HOW = ("set data.path, or set $JAXCOMP_SHARED_DATA to the shared data folder, or use "
        "data.name='cifar10_sample' (ships with jaxcomp) or 'tfds:<name>' with data.data_dir")


def shared_data_dirs() -> list[pathlib.Path]:
  """Candidate shared-data folders, in search order."""
  dirs = [pathlib.Path(os.environ["JAXCOMP_SHARED_DATA"])] if os.environ.get(
      "JAXCOMP_SHARED_DATA") else []
  repo_root = pathlib.Path(__file__).resolve().parents[2]
  return dirs + [pathlib.Path("../shared/data").resolve(), repo_root.parent / "shared" / "data"]


def find_data(path: str, relative: str, what: str) -> pathlib.Path:
  """`path` if given, else `relative` under the first shared-data folder holding it.

  Raises:
    FileNotFoundError: naming every place looked in and how to provide the data.
  """
  if path:
    candidates = [pathlib.Path(path).expanduser()]
  else:
    candidates = [d / relative for d in shared_data_dirs()]
  for c in candidates:
    if c.exists():
      return c
  raise FileNotFoundError(f"{what} not found; looked for {', '.join(map(str, candidates))}. "
                          f"To provide it, {_HOW}.")


def sample_kodak_dir() -> pathlib.Path:
  """The Kodak images shipped in the package (kodim15.png, kodim23.png)."""
  return SAMPLE_DIR / "kodak"


def kodak_dir() -> pathlib.Path:
  """The full Kodak set of the shared data if present, else the packaged two images."""
  for d in shared_data_dirs():
    if (d / "kodak").is_dir():
      return d / "kodak"
  return sample_kodak_dir()


def _source(arrays) -> ArraySource | RaggedSource:
  if "images" in arrays:
    return ArraySource(arrays["images"], arrays["labels"])
  return RaggedSource(arrays["pixels"], arrays["offsets"], arrays["shapes"], arrays["labels"])


def _stored_shape(source: ArraySource | RaggedSource) -> tuple[int | None, ...]:
  if isinstance(source, ArraySource):
    return source.images.shape[1:]
  return (None, None, int(source.shapes[0, -1]))


def _train_stats(arrays_of: Callable[[str], Mapping], c: ml_collections.ConfigDict):
  """Statistics of the training split, for generic data."""
  train = arrays_of(c.train_split)
  return tuple(train["mean"]), tuple(train["std"])


def _class_folder_dataset(c, split, *, name, path, stats=None):
  """Without `stats` (generic data): statistics of the training split, and the
  augmentation "cifar" up to 64x64 pixels, else "inception" (ImageNet style)."""
  if path.is_dir():   # the key covers every image file
    with readers.open_container(path) as (names, _):
      members = [path / m for m in names]
  else:
    members = [path]

  def arrays_of(s: str) -> Mapping:
    key = f"{_READER_VERSION}|class_folders|{s}|{path.resolve()}\n{file_key(members)}"
    return cached_arrays(c.cache_dir, f"{name}-{s}", key,
                         lambda: readers.read_class_folders(path, s))

  arrays = arrays_of(split)
  source = _source(arrays)
  stored = _stored_shape(source)
  class_names = tuple(str(s) for s in arrays["class_names"])
  ds = make_dataset(name, split, source, num_classes=len(class_names), class_names=class_names,
                    stats=stats or _train_stats(arrays_of, c), default_augment="cifar",
                    stored_shape=stored, image_size=c.image_size)
  small = stored[0] is not None and max(stored[:2]) <= 64
  return ds if small else dataclasses.replace(ds, default_augment="inception",
                                              eval_crop=IMAGENET_EVAL_CROP)


@DATASETS.register("cifar10_sample")
def cifar10_sample(c: ml_collections.ConfigDict, split: str) -> ImageDataset:
  path = SAMPLE_DIR / "cifar10_jpeg75_sample.zip"
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the package; rebuild it with "
                            "`python -m jaxcomp.data.make_sample --shared ../shared/data`")
  return _class_folder_dataset(c, split, name="cifar10_sample", path=path, stats=CIFAR10_STATS)


@DATASETS.register("cifar10_jpeg75")
def cifar10_jpeg75(c: ml_collections.ConfigDict, split: str) -> ImageDataset:
  path = find_data(c.path, "cifar10_jpeg75.zip", "cifar10_jpeg75.zip")
  if path.is_dir() and (path / "cifar10_jpeg75.zip").is_file():
    path = path / "cifar10_jpeg75.zip"
  return _class_folder_dataset(c, split, name="cifar10_jpeg75", path=path, stats=CIFAR10_STATS)


@DATASETS.register("image_folder")
def image_folder(c: ml_collections.ConfigDict, split: str) -> ImageDataset:
  if not c.path:
    raise ValueError("data.name='image_folder' needs data.path: a directory or zip of "
                     "<split>/<class>/<image> files")
  return _class_folder_dataset(c, split, name="image_folder",
                               path=find_data(c.path, "", "image folder"))


def _idx_dataset(c, split, *, name, folder, stats=None, class_names=None):
  """Without `class_names` (generic data): labels 0 .. max label of the training split."""
  def arrays_of(s: str) -> Mapping:
    key = f"{_READER_VERSION}|idx|{s}\n{file_key(list(readers.idx_files(folder, s)))}"
    return cached_arrays(c.cache_dir, f"{name}-{s}", key, lambda: readers.read_idx_split(folder, s))

  source = _source(arrays_of(split))
  if not class_names:
    class_names = tuple(str(i) for i in range(int(arrays_of(c.train_split)["labels"].max()) + 1))
  return make_dataset(name, split, source, num_classes=len(class_names), class_names=class_names,
                      stats=stats or _train_stats(arrays_of, c), default_augment="cifar",
                      stored_shape=_stored_shape(source), image_size=c.image_size)


@DATASETS.register("fashion_mnist_idx")
def fashion_mnist_idx(c: ml_collections.ConfigDict, split: str) -> ImageDataset:
  """Fashion-MNIST. Default augmentation "cifar" (pad-4 random crop + flip): the
  standard augmentation of the Fashion-MNIST baselines of Random Erasing
  (Zhong et al., AAAI 2020); use data.augment="none" for the plain images."""
  folder = find_data(c.path, "fashion_mnist", "Fashion-MNIST IDX folder")
  return _idx_dataset(c, split, name="fashion_mnist_idx", folder=folder,
                      stats=FASHION_MNIST_STATS, class_names=FASHION_MNIST_CLASSES)


@DATASETS.register("idx")
def idx(c: ml_collections.ConfigDict, split: str) -> ImageDataset:
  if not c.path:
    raise ValueError("data.name='idx' needs data.path: a folder of "
                     "<split>-images-idx3-ubyte[.gz] and <split>-labels-idx1-ubyte[.gz]")
  return _idx_dataset(c, split, name="idx", folder=find_data(c.path, "", "IDX folder"))
