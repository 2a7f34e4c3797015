"""Batches for training and evaluation, sharded per process, prefetched by grain.

Training: the examples form an endless stream, epoch after epoch, each epoch
in the order of a permutation seeded by (seed, epoch). Global batch s holds
stream positions [s B, (s + 1) B) and process p of P takes the p-th of its P
slices, so batch s is a pure function of (seed, s): resuming at `start_step`
decodes nothing before it, and the slices of P processes concatenate to the
batch of one. Augmentation parameters are drawn for the whole global batch
from a generator seeded by (seed, s) and sliced the same way.

grain runs the batch function in `num_threads` threads over the step indices
(`MapDataset.range(...).map(...).to_iter_dataset(...)`), which keeps the
order and prefetches while the accelerator trains.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Iterator

import grain
import numpy as np

from jaxcomp.data.dataset import ImageDataset
from jaxcomp.data.transforms import flip, pad_crop_flip
from jaxcomp.registry import Registry

Batch = dict[str, np.ndarray]
INCEPTION_ATTEMPTS = 10
CIFAR_PAD = 4

# name -> augment(ds, indices, rng, batch_size, sl) -> (uint8 images [b, H, W, C],
# int32 labels [b]): reads the examples at `indices` (positions in `ds`) and augments them with
# draws from `rng` made for the whole global batch of `batch_size` and sliced by `sl`
# (so that P processes draw what one would).
AUGMENTATIONS: Registry[Callable[..., np.ndarray]] = Registry("augmentation")


@AUGMENTATIONS.register("none")
def _none(ds, indices, rng, batch_size, sl):
  del rng, batch_size, sl
  return ds.read(indices)


@AUGMENTATIONS.register("flip")
def _flip(ds, indices, rng, batch_size, sl):
  images, labels = ds.read(indices)
  return flip(images, rng.random(batch_size)[sl] < 0.5), labels


@AUGMENTATIONS.register("cifar")
def _cifar(ds, indices, rng, batch_size, sl):
  """Pad-4 random crop + flip (He et al. 2016, Sec. 4.2)."""
  offsets = rng.integers(0, 2 * CIFAR_PAD + 1, (batch_size, 2))[sl]
  images, labels = ds.read(indices)
  return pad_crop_flip(images, offsets, rng.random(batch_size)[sl] < 0.5, pad=CIFAR_PAD), labels


@AUGMENTATIONS.register("inception")
def _inception(ds, indices, rng, batch_size, sl):
  """Inception crop (`transforms.inception_boxes`) + flip."""
  uniforms = rng.random((batch_size, INCEPTION_ATTEMPTS, 4))[sl]
  images, labels = ds.read(indices, uniforms=uniforms)
  return flip(images, rng.random(batch_size)[sl] < 0.5), labels


def _local_batch(batch_size: int, process_index: int, process_count: int) -> int:
  if batch_size <= 0 or process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(f"need batch_size > 0 and 0 <= process_index < process_count, got "
                     f"{batch_size}, {process_index}, {process_count}")
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
  return batch_size // process_count


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  perm = np.random.default_rng([seed, 0, epoch]).permutation(n)
  perm.flags.writeable = False
  return perm


def epoch_order(seed: int, positions: np.ndarray, n: int) -> np.ndarray:
  """Dataset indices at stream `positions` (int [k] >= 0) of an n-example dataset."""
  epochs, within = np.divmod(positions, n)
  out = np.empty_like(positions)
  for e in np.unique(epochs):
    sel = epochs == e
    out[sel] = _permutation(seed, int(e), n)[within[sel]]
  return out


def _iterate(num: int, start: int, make: Callable[[int], Batch], num_threads: int | None
             ) -> Iterator[Batch]:
  threads = min(8, os.cpu_count() or 1) if num_threads is None else num_threads
  steps = grain.MapDataset.range(start, num).map(make)
  return iter(steps.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                      prefetch_buffer_size=2 * threads)))


def train_batches(ds: ImageDataset, *, batch_size: int, seed: int, start_step: int = 0,
                  augment: str = "default", process_index: int = 0, process_count: int = 1,
                  num_threads: int | None = None) -> Iterator[Batch]:
  """Endless training batches of this process.

  Args:
    ds: the dataset.
    batch_size: the global batch B, divisible by `process_count`.
    seed: >= 0; fixes the epoch permutations and the augmentation.
    start_step: the first batch to yield (resuming a run).
    augment: "default" (`ds.default_augment`) or a registered augmentation
      (`AUGMENTATIONS`: "cifar" pad-4 random crop + flip, "inception" Inception
      crop + flip, "flip", "none").
    process_index, process_count: this process among all (multi-host).
    num_threads: grain worker threads (None: min(8, CPUs); 0: in the caller's thread).

  Returns:
    An iterator of {"image": uint8 [B / P, H, W, C], "label": int32 [B / P]}.
  """
  local = _local_batch(batch_size, process_index, process_count)
  try:
    augment_fn = AUGMENTATIONS.get(ds.default_augment if augment == "default" else augment)
  except KeyError as e:
    raise ValueError(f"augment={augment!r}: {e.args[0]} (or 'default')") from None
  if seed < 0 or start_step < 0 or len(ds) == 0:
    raise ValueError(f"need seed >= 0, start_step >= 0 and a non-empty dataset, got "
                     f"{seed}, {start_step}, {len(ds)} examples")
  sl = slice(process_index * local, (process_index + 1) * local)

  def make(step: int) -> Batch:
    positions = step * batch_size + np.arange(batch_size, dtype=np.int64)[sl]
    rng = np.random.default_rng([seed, 1, step])
    images, labels = augment_fn(ds, epoch_order(seed, positions, len(ds)), rng, batch_size, sl)
    return {"image": images, "label": labels}

  return _iterate(2**62, start_step, make, num_threads)


def eval_batches(ds: ImageDataset, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_threads: int | None = None) -> Iterator[Batch]:
  """One pass over `ds` in order, every batch the same shape.

  Global batch k holds examples [k B, (k + 1) B), process p its p-th slice; the
  last one is padded with zero images and labels. Every batch carries "mask",
  so the pytree and the shapes never change (no recompiles).

  Returns:
    An iterator of ceil(len(ds) / B) batches {"image": uint8 [B / P, H, W, C],
    "label": int32 [B / P], "mask": bool [B / P] (False on padding)}.
  """
  local = _local_batch(batch_size, process_index, process_count)
  n = len(ds)
  if n == 0:
    raise ValueError(f"{ds.name}/{ds.split} is empty")
  offset = process_index * local

  def make(k: int) -> Batch:
    positions = k * batch_size + offset + np.arange(local, dtype=np.int64)
    mask = positions < n
    images, labels = ds.read(np.where(mask, positions, 0))
    images[~mask] = 0
    labels[~mask] = 0
    return {"image": images, "label": labels, "mask": mask}

  return _iterate(-(-n // batch_size), 0, make, num_threads)
