"""train_batches / eval_batches on the packaged sample: determinism, resume, sharding,
augmentation, padding. Host-side numpy code, so nothing here is jitted."""

from __future__ import annotations

import itertools

import grain
import numpy as np
import pytest

from jaxcomp import data
from jaxcomp.data import pipeline


def _take(it, n):
  return list(itertools.islice(it, n))


def _equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_same_seed_same_batches_and_resume(sample):
  ds = sample["train"]
  first = _take(data.train_batches(ds, batch_size=64, seed=3), 4)
  again = _take(data.train_batches(ds, batch_size=64, seed=3, num_threads=0), 4)
  resumed = _take(data.train_batches(ds, batch_size=64, seed=3, start_step=2), 2)
  for a, b in zip(first, again):
    _equal(a, b)
  _equal(first[2], resumed[0])
  _equal(first[3], resumed[1])
  other = next(data.train_batches(ds, batch_size=64, seed=4))
  assert not np.array_equal(other["label"], first[0]["label"])
  b = first[0]
  assert b["image"].shape == (64, 32, 32, 3) and b["image"].dtype == np.uint8
  assert b["label"].shape == (64,) and b["label"].dtype == np.int32


def test_epochs_are_permutations_across_batch_boundaries():
  # 10 examples, batch 4: batches straddle epochs; every epoch visits each index once.
  positions = np.arange(40)
  order = pipeline.epoch_order(7, positions, 10)
  for e in range(4):
    assert sorted(order[10 * e:10 * (e + 1)]) == list(range(10))
  assert not np.array_equal(order[:10], order[10:20])   # a new permutation each epoch


def test_resume_far_into_training_reads_only_the_needed_batch(sample):
  ds = sample["train"]
  step = 10**6   # epoch 6400 of the 10,000-example sample at batch 64
  batch = next(data.train_batches(ds, batch_size=64, seed=0, start_step=step, augment="none"))
  idx = pipeline.epoch_order(0, step * 64 + np.arange(64), len(ds))
  np.testing.assert_array_equal(batch["image"], ds.source.images[idx])
  np.testing.assert_array_equal(batch["label"], ds.source.labels[idx])


@pytest.mark.parametrize("augment", ["cifar", "none", "flip"])
def test_process_slices_concatenate_to_the_global_batch(sample, augment):
  ds = sample["train"]
  whole = _take(data.train_batches(ds, batch_size=32, seed=1, augment=augment), 2)
  parts = [_take(data.train_batches(ds, batch_size=32, seed=1, augment=augment,
                                    process_index=p, process_count=2), 2) for p in range(2)]
  for s in range(2):
    assert parts[0][s]["image"].shape[0] == 16
    _equal(whole[s], {k: np.concatenate([parts[0][s][k], parts[1][s][k]]) for k in whole[s]})


def test_cifar_augmentation_is_a_shift_and_flip_of_the_image(sample):
  ds = sample["train"]
  batch = next(data.train_batches(ds, batch_size=64, seed=0))   # default: "cifar"
  plain = next(data.train_batches(ds, batch_size=64, seed=0, augment="none"))
  np.testing.assert_array_equal(batch["label"], plain["label"])
  shifted = 0
  for aug, img in zip(batch["image"], plain["image"]):
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
    # Some offset (dy, dx) and flip must reproduce the augmented image exactly.
    hits = [(dy, dx) for dy in range(9) for dx in range(9) for f in (False, True)
            if np.array_equal(aug, (lambda c: c[:, ::-1] if f else c)(padded[dy:dy + 32, dx:dx + 32]))]
    assert hits
    shifted += (4, 4) not in hits
  assert shifted > 32   # 80 of 81 offsets move the image: most of 64 must be shifted


def test_inception_augmentation_shapes(sample):
  ds = sample["train"]
  a = next(data.train_batches(ds, batch_size=8, seed=0, augment="inception"))
  b = next(data.train_batches(ds, batch_size=8, seed=0, augment="inception"))
  assert a["image"].shape == (8, 32, 32, 3) and a["image"].dtype == np.uint8
  np.testing.assert_array_equal(a["image"], b["image"])


def test_eval_batches_pad_and_mask(sample):
  ds = sample["test"]   # 2,000 examples, batch 300: 7 batches, the last holds 200
  batches = list(data.eval_batches(ds, batch_size=300))
  assert len(batches) == 7
  assert all(b["image"].shape == (300, 32, 32, 3) and b["mask"].shape == (300,) for b in batches)
  assert [int(b["mask"].sum()) for b in batches] == [300] * 6 + [200]
  last = batches[-1]
  assert not last["image"][200:].any() and not last["label"][200:].any()
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(images, ds.source.images)   # in order, unaugmented
  # Two processes: the same number of batches; slices concatenate to the global batch.
  halves = [list(data.eval_batches(ds, batch_size=300, process_index=p, process_count=2))
            for p in range(2)]
  assert len(halves[0]) == len(halves[1]) == 7
  np.testing.assert_array_equal(np.concatenate([halves[0][6]["mask"], halves[1][6]["mask"]]),
                                last["mask"])


def test_dataset_is_a_grain_source(sample):
  ds = sample["test"]
  source = grain.MapDataset.source(ds)
  assert len(source) == 2000
  np.testing.assert_array_equal(source[7]["image"], ds.source.images[7])


def test_bad_arguments(sample):
  ds = sample["test"]
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    data.train_batches(ds, batch_size=64, seed=0, process_count=3)
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    data.eval_batches(ds, batch_size=64, process_count=3)
  with pytest.raises(ValueError, match="augment='mixup'"):
    data.train_batches(ds, batch_size=64, seed=0, augment="mixup")
  with pytest.raises(ValueError, match="seed >= 0"):
    data.train_batches(ds, batch_size=64, seed=-1)
