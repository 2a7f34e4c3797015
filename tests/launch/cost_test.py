"""launch/cost.py: steps and device-hours by hand, FLOPs against torchvision's published
count, the tfds split sizes offline, and the estimate printed for a grid."""

from __future__ import annotations

import ml_collections
import pytest

import cost
import grid as grid_lib


def _config(**train) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "mode": "train_and_evaluate", "model": {"dtype": "float32"},
      "train": {"batch_size": 256, "epochs": 90.0, "num_steps": 0, "eval_every_steps": 0,
                **train}})


IMAGENET = {"train": 1_281_167, "eval": 50_000}


def test_steps_and_evaluations_follow_the_trainer():
  c = cost.run_cost(_config(), IMAGENET, (10e9, 3e9))
  # 1,281,167 // 256 = 5,004 steps per epoch; 90 epochs; one evaluation per epoch
  # (at steps 5,004, ..., 89 x 5,004, and the final one) over 50,000 images.
  assert c["steps"] == 450_360 and c["epochs"] == 90
  assert c["train_images"] == 450_360 * 256 and c["eval_images"] == 90 * 50_000
  assert c["flops"] == 450_360 * 256 * 10e9 + 90 * 50_000 * 3e9
  c = cost.run_cost(_config(num_steps=1000, eval_every_steps=300), IMAGENET, (1.0, 1.0))
  assert c["steps"] == 1000 and c["eval_images"] == 4 * 50_000   # 300, 600, 900, end
  assert cost.run_cost(_config(), {"train": 100, "eval": 10}, (1.0, 1.0))["steps"] == 90


def test_device_hours_at_the_assumed_or_a_measured_rate():
  c = cost.run_cost(_config(), IMAGENET, (10e9, 3e9))
  hours, rate = cost.device_hours(c, (10e9, 3e9), dtype="float32", device="a100",
                                  utilization=0.2)
  # A100 float32 (TF32) peak 156 TFLOP/s x 0.2 / 10 GFLOP = 3,120 training images/s.
  assert rate == pytest.approx(3120.0)
  assert hours == pytest.approx((115_292_160 * 10e9 + 4_500_000 * 3e9) / 31.2e12 / 3600)
  hours, rate = cost.device_hours(c, (10e9, 3e9), dtype="bfloat16", device="v5p",
                                  utilization=0.2, images_per_s=2000.0)
  assert rate == 2000.0
  assert hours == pytest.approx((115_292_160 + 4_500_000 * 0.3) / 2000 / 3600)
  with pytest.raises(ValueError, match="unknown device 'tpu9'"):
    cost.device_hours(c, (1.0, 1.0), dtype="float32", device="tpu9", utilization=0.2)


def test_imagenet_facts_offline_and_squeezenet_flops():
  c = cost.load_config("configs/jpeg_dl.py:variant=imagenet_squeezenet1_1,jpeg_layer=False",
                       ["--config.train.epochs=2"])
  assert c.train.epochs == 2 and c.data.name == "tfds:imagenet2012"
  facts = cost.dataset_facts(c)   # no data needed: tfds's features, the catalog's sizes
  assert facts == {"train": 1_281_167, "eval": 50_000, "classes": 1000, "channels": 3,
                   "size": 224}
  train, forward = cost.flops_per_image(c, facts)
  # torchvision's model table: SqueezeNet 1.1 0.35 GFLOPS (multiply-adds) at 224x224,
  # i.e. 0.70 GFLOP; a training step costs about 3 forward passes.
  assert forward == pytest.approx(0.70e9, rel=0.05)
  assert 2.5 < train / forward < 3.5


def test_print_estimate_groups_seeds(capsys):
  runs = grid_lib.from_cli("configs/cifar10.py:variant=tfds",
                           ["config.seed=0,1", "model=resnet20"]).runs()
  total = cost.print_estimate(runs, ["--config.train.epochs=2"], device="v4", utilization=None)
  out = capsys.readouterr().out.splitlines()
  assert out[0] == "Cost on v4: 20% of its peak (275 TFLOP/s bfloat16, 275 float32)."
  row = out[4].split(" | ")
  # 50,000 // 128 = 390 steps per epoch, 2 epochs; both seeds in one row.
  assert row[:4] == ["| model=resnet20", "2", "780", "2"]
  assert float(row[7].rstrip(" |")) == pytest.approx(total, rel=5e-3)
  assert 2 * float(row[6]) == pytest.approx(total, rel=5e-3)
  assert out[-1] == f"Total: {total:.3g} v4-hours ({total / 24:.3g} device-days)."
