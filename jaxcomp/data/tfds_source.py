"""tfds datasets by name ("tfds:cifar10", "tfds:imagenet2012", ...), never downloaded.

Reads prepared data in `data.data_dir` (a local folder or a GCS bucket on TPU)
through `DatasetBuilder.as_data_source` (what `tfds.data_source` calls): random
access to ArrayRecord/Parquet files with numpy decoding, no TensorFlow. Data
prepared in the TFRecord format is read with TensorFlow when it is installed
(the split is then held in memory, fine up to a few GB; convert ImageNet to
ArrayRecord instead). Any tfds dataset with "image" and "label" features works;
the known ones below carry their statistics and augmentation.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from jaxcomp.data.dataset import (CIFAR10_STATS, CIFAR100_STATS, DATASETS, FASHION_MNIST_STATS,
                                  IMAGENET_EVAL_CROP, IMAGENET_STATS, ImageDataset, make_dataset)

_IMAGENET_STYLE = (IMAGENET_STATS, "inception")
KNOWN = {
    "cifar10": (CIFAR10_STATS, "cifar"),
    "cifar100": (CIFAR100_STATS, "cifar"),
    "fashion_mnist": (FASHION_MNIST_STATS, "cifar"),
    "imagenet2012": _IMAGENET_STYLE,
    "oxford_flowers102": _IMAGENET_STYLE,
    "stanford_dogs": _IMAGENET_STYLE,
    "caltech_birds2011": _IMAGENET_STYLE,
    "oxford_iiit_pet": _IMAGENET_STYLE,
}


def _defaults(name: str, shape: tuple[int | None, ...]):
  """Statistics and augmentation: from KNOWN, else ImageNet statistics (their
  channel mean for grey) with "cifar" up to 64x64 pixels and "inception" above."""
  if name in KNOWN:
    return KNOWN[name]
  mean, std = IMAGENET_STATS
  stats = (mean, std) if shape[-1] == 3 else ((float(np.mean(mean)),), (float(np.mean(std)),))
  small = shape[0] is not None and max(shape[:2]) <= 64
  return stats, "cifar" if small else "inception"


def _tfrecord_examples(builder, split: str) -> list[dict]:
  """The split read with TensorFlow into memory (data prepared as TFRecord)."""
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    raise RuntimeError(
        f"tfds dataset {builder.name} in {builder.data_dir} is in the "
        f"{builder.info.file_format} format, which needs TensorFlow: install it "
        "(pip install 'jaxcomp[tf]') or convert the data to ArrayRecord with `tfds convert_format "
        f"--dataset_version_dir={builder.data_dir} --out_file_format=array_record "
        "--out_dir=<new folder>`") from None
  import tensorflow_datasets as tfds
  ds = builder.as_dataset(split=split, decoders=None)
  return [{"image": ex["image"], "label": int(ex["label"])} for ex in tfds.as_numpy(ds)]


@DATASETS.register_prefix("tfds:")
def tfds_dataset(c: ml_collections.ConfigDict, split: str, name: str) -> ImageDataset:
  """Split `split` (any tfds split string, e.g. "train[:10%]") of tfds dataset `name`
  (`data.name="tfds:<name>"`).

  Raises:
    FileNotFoundError: the dataset is not prepared in data.data_dir.
    ValueError: it has no "image"/"label" features.
  """
  import tensorflow_datasets as tfds
  if not name:
    raise ValueError("data.name='tfds:<name>' needs a tfds dataset name, e.g. 'tfds:cifar10'")
  builder = tfds.builder(name, data_dir=c.data_dir or None)
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise ValueError(f"tfds dataset {name} has features {list(features)}; "
                     "jaxcomp needs 'image' and 'label'")
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"tfds dataset {name} is not prepared in {builder.data_dir} (data.data_dir="
        f"{c.data_dir!r}); jaxcomp never downloads. Prepare it on a machine with network access "
        f"(`tfds build {name} --data_dir=<dir> --file_format=array_record`; ImageNet needs its "
        "archives placed in <dir>/downloads/manual first) and set data.data_dir to that folder "
        "or bucket, or use a local dataset (data.name='cifar10_sample').")
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError:   # TFRecord: no random access without TensorFlow
    source = _tfrecord_examples(builder, split)
  label = features["label"]
  shape = tuple(features["image"].shape)
  stats, augment = _defaults(name, shape)
  return make_dataset(
      f"tfds:{name}", split, source, num_classes=label.num_classes, class_names=tuple(label.names),
      stats=stats, default_augment=augment, stored_shape=shape, image_size=c.image_size,
      eval_crop=IMAGENET_EVAL_CROP if augment == "inception" else 1.0)
