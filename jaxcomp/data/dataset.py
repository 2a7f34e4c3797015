"""`ImageDataset`: one random-access interface over tfds and local image data.

A dataset is a random-access source of examples `{"image": uint8 [h, w, C],
"label": int}` (a grain `RandomAccessDataSource`: `len` and `[i]`) plus what a
model needs to know: classes, the batch image shape, normalisation statistics
and the default augmentation. `DATASETS` maps a name to a factory
`(data_config, split) -> ImageDataset`, or a prefix ("tfds:") to a factory
`(data_config, split, rest_of_the_name) -> ImageDataset`; a new source is one
registration. `get_dataset` is the entry point; `open_dataset` opens any name,
so that a source can wrap another (`compressed:<source>:<codec>`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import ml_collections
import numpy as np

from jaxcomp.data.transforms import center_boxes, crop_resize, inception_boxes
from jaxcomp.registry import Registry

DATASETS: Registry = Registry("dataset")

# Per-channel statistics of images scaled to [0, 1] (training split).
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DEFAULT_IMAGE_SIZE = 224    # batch size of variable-size images when data.image_size = 0
IMAGENET_EVAL_CROP = 0.875  # evaluation: resize the shorter side to 256, centre-crop 224


class Source(Protocol):
  """Random access to examples `{"image": uint8 [h, w, C], "label": int}`."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Equal-size images held in memory: uint8 [N, H, W, C] and int32 [N]."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": int(self.labels[index])}


@dataclasses.dataclass(frozen=True)
class RaggedSource:
  """Images of different sizes held in memory as one flat buffer.

  Image i is `pixels[offsets[i]:offsets[i + 1]].reshape(shapes[i])`.
  """
  pixels: np.ndarray   # uint8 [total]
  offsets: np.ndarray  # int64 [N + 1]
  shapes: np.ndarray   # int64 [N, 3]
  labels: np.ndarray   # int32 [N]

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    image = self.pixels[self.offsets[index]:self.offsets[index + 1]].reshape(self.shapes[index])
    return {"image": image, "label": int(self.labels[index])}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
  """A split of an image classification dataset.

  Attributes:
    name, split: as given to `get_dataset`.
    num_classes: labels are in [0, num_classes).
    image_shape: (H, W, C) of the images `read` returns (after crop/resize).
    mean, std: per channel, for images scaled to [0, 1] (`transforms.normalize`).
    default_augment: "cifar" | "inception" | "flip" | "none".
    class_names: `num_classes` names, index = label.
    source: the examples (images at their stored size).
    indices: positions in `source` of this dataset's examples (a subset), or None for all.
    eval_crop: centre-crop fraction used to bring stored images to `image_shape`
      (0.875 for ImageNet-style evaluation, 1.0 = the whole image).
  """
  name: str
  split: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  default_augment: str
  class_names: tuple[str, ...]
  source: Source
  indices: np.ndarray | None = None
  eval_crop: float = 1.0

  def __len__(self) -> int:
    return len(self.source) if self.indices is None else len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    """Example `index` at its stored size: {"image": uint8 [h, w, C], "label": int}."""
    return self.source[int(self._source_index(np.asarray(index)))]

  def _source_index(self, positions: np.ndarray) -> np.ndarray:
    n = len(self)
    if positions.size and (positions.min() < 0 or positions.max() >= n):
      raise IndexError(f"positions out of range for {self.name}/{self.split} of {n} examples")
    return positions if self.indices is None else self.indices[positions]

  def read(self, positions: np.ndarray, *,
           uniforms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Examples at `positions`, brought to `image_shape`.

    Args:
      positions: int [n] in [0, len(self)).
      uniforms: float [n, attempts, 4] in [0, 1) for Inception crops
        (`transforms.inception_boxes`); None: the centred `eval_crop` crop,
        only where the stored size differs from `image_shape`.

    Returns:
      images uint8 [n, H, W, C] and labels int32 [n].
    """
    idx = self._source_index(np.asarray(positions, np.int64))
    images = getattr(self.source, "images", None)
    if uniforms is None and images is not None and images.shape[1:] == self.image_shape:
      return images[idx], self.source.labels[idx].astype(np.int32)   # vectorised gather
    examples = [self.source[int(i)] for i in idx]
    raw = [e["image"][..., None] if e["image"].ndim == 2 else e["image"] for e in examples]
    labels = np.array([e["label"] for e in examples], np.int32).reshape(len(raw))
    sizes = np.array([r.shape[:2] for r in raw], np.int64).reshape(len(raw), 2)
    hw = self.image_shape[:2]
    boxes = (center_boxes(sizes, hw, fraction=self.eval_crop) if uniforms is None
             else inception_boxes(sizes, uniforms))
    out = np.zeros((len(raw), *self.image_shape), np.uint8)
    for i, (image, box) in enumerate(zip(raw, boxes)):
      if image.shape[-1] != self.image_shape[-1]:
        raise ValueError(f"{self.name}: example {idx[i]} has {image.shape[-1]} channels, "
                         f"expected {self.image_shape[-1]}")
      out[i] = crop_resize(image, box, hw)
    return out, labels


def make_dataset(name: str, split: str, source: Source, *, num_classes: int,
                 class_names: tuple[str, ...], stats: tuple[tuple[float, ...], tuple[float, ...]],
                 default_augment: str, stored_shape: tuple[int | None, ...],
                 image_size: int = 0, eval_crop: float = 1.0) -> ImageDataset:
  """An `ImageDataset` whose batch shape follows `image_size`.

  Args:
    stored_shape: (h, w, C) of the stored images, h = w = None when they vary.
    image_size: 0 -> the stored size, or DEFAULT_IMAGE_SIZE if it varies;
      > 0 -> square images of that side.
  """
  h, w, c = stored_shape
  if image_size:
    h = w = image_size
  elif h is None or w is None:
    h = w = DEFAULT_IMAGE_SIZE
  if len(stats[0]) != c or len(stats[1]) != c:
    raise ValueError(f"{name}: statistics {stats} do not have {c} channels")
  return ImageDataset(name=name, split=split, num_classes=num_classes, image_shape=(h, w, c),
                      mean=tuple(stats[0]), std=tuple(stats[1]),
                      default_augment=default_augment, class_names=tuple(class_names),
                      source=source, eval_crop=eval_crop)


def subset(ds: ImageDataset, n: int) -> ImageDataset:
  """A fixed subset of `n` examples, drawn with seed 0, in their original order."""
  if n > len(ds):
    raise ValueError(f"{ds.name}/{ds.split} has {len(ds)} examples; cannot take a subset of {n}")
  chosen = np.sort(np.random.default_rng(0).permutation(len(ds))[:n])
  base = np.arange(len(ds.source)) if ds.indices is None else ds.indices
  return dataclasses.replace(ds, indices=base[chosen])


def open_dataset(data_config: ml_collections.ConfigDict, split: str, name: str) -> ImageDataset:
  """Split `split` of the dataset source `name` (whole; `get_dataset` takes subsets).

  Raises:
    KeyError: an unknown name (the message lists the known ones).
  """
  factory, rest = DATASETS.resolve(name)
  return factory(data_config, split) if rest is None else factory(data_config, split, rest)


def get_dataset(data_config: ml_collections.ConfigDict, split: str) -> ImageDataset:
  """The split `split` of the dataset `data_config.name` (see `DATASETS.names()`).

  `data_config` is `config.data` of `jaxcomp.config_lib.base_config()`.
  `data_config.num_train_examples` (for `split == data_config.train_split`) or
  `num_eval_examples` (any other split), when > 0, keeps a fixed subset of
  that size (`subset`). Names "tfds:<name>" read tfds dataset <name>.

  Raises:
    KeyError: an unknown dataset name (the message lists the known ones).
    FileNotFoundError: the data is missing (the message says where it was
      looked for and how to provide it).
  """
  ds = open_dataset(data_config, split, data_config.name)
  n = data_config.num_train_examples if split == data_config.train_split \
      else data_config.num_eval_examples
  return subset(ds, n) if n else ds
