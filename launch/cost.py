"""What a grid costs before it runs: steps and accelerator-hours from each run's config.

For every run the config gives the training steps (the trainer's rule: epochs x
(train images // batch), or train.num_steps) and the evaluations (one pass over
the eval split per epoch, unless train.eval_every_steps says otherwise, and one
at the end). XLA's cost analysis of the model (`build_classifier`, the run's
image size and classes) gives the FLOPs of one training image (forward and
backward, train mode) and of one evaluated image (forward). Then

    accelerator-hours = (train images x train FLOPs + eval images x eval FLOPs)
                        / (peak FLOP/s x utilization) / 3600,

the assumed throughput per device being peak x utilization / FLOPs per image
(stated in the table), or a measured `images_per_s` (a short run's
summary.json "steady_images_per_s" / devices). Input pipelines, host
transfers and checkpoints are not counted; spread over n devices the
wall-clock time is the hours / n if the data-parallel scaling is perfect.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags
from ml_collections import config_flags

import grid as grid_lib
from jaxcomp import config_lib, data
from jaxcomp.tasks import classification

# Dense peak TFLOP/s per chip or GPU: (bfloat16 compute, float32 compute as XLA
# runs it by default). Sources: Cloud TPU system architecture pages (v4 275, v5e 197,
# v5p 459, v6e 918 bf16; f32 convolutions and matmuls run as bf16 passes at JAX's
# default precision); NVIDIA A100 and H100 SXM datasheets (bf16 312 / 989 dense,
# f32 on TF32 tensor cores 156 / 495 dense, XLA's default for f32 on Ampere and
# later); H200 = H100 compute; V100: 125 fp16 tensor, 15.7 fp32.
PEAK_TFLOPS = {"v4": (275.0, 275.0), "v5e": (197.0, 197.0), "v5p": (459.0, 459.0),
               "v6e": (918.0, 918.0), "a100": (312.0, 156.0), "h100": (989.0, 495.0),
               "h200": (989.0, 495.0), "v100": (125.0, 15.7)}
# Assumed fraction of the peak a convnet's training step reaches (an assumption,
# not a measurement: ResNet-50 at ~2,700 images/s on an A100 in mixed precision,
# NVIDIA's published training rate, is 24.6 GFLOP x 2,700 / 312 TFLOP/s = 21 %).
UTILIZATION = 0.2
# tfds split sizes (the tfds catalog pages); local datasets are counted directly.
TFDS_SPLITS = {
    "imagenet2012": {"train": 1_281_167, "validation": 50_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
    "oxford_flowers102": {"train": 1_020, "validation": 1_020, "test": 6_149},
    "stanford_dogs": {"train": 12_000, "test": 8_580},
    "caltech_birds2011": {"train": 5_994, "test": 5_794},
    "oxford_iiit_pet": {"train": 3_680, "test": 3_669},
}


def load_config(config: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """The validated config `python -m jaxcomp.main --config=<config> <overrides>` runs."""
  fv = flags.FlagValues()
  argv = ["cost", f"--config={config}", *overrides]
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return config_lib.validate(fv.config)


def dataset_facts(c: ml_collections.ConfigDict) -> dict[str, Any]:
  """Train / eval sizes, classes, channels of the run's data (tfds: from the catalog)."""
  if c.data.name.startswith("tfds:"):
    import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
    name = c.data.name[len("tfds:"):]
    if name not in TFDS_SPLITS:
      raise ValueError(f"no split sizes for tfds:{name}; known: {sorted(TFDS_SPLITS)}")
    features = tfds.builder(name, data_dir=c.data.data_dir or None).info.features
    sizes = TFDS_SPLITS[name]
    facts = {"train": sizes[c.data.train_split], "eval": sizes[c.data.eval_split],
             "classes": features["label"].num_classes, "channels": features["image"].shape[-1],
             "size": features["image"].shape[0]}
  else:
    train = data.get_dataset(c.data, c.data.train_split)
    facts = {"train": len(train), "eval": len(data.get_dataset(c.data, c.data.eval_split)),
             "classes": train.num_classes, "channels": train.image_shape[-1],
             "size": train.image_shape[0]}
  for split in ("train", "eval"):
    limit = c.data[f"num_{split}_examples"]
    facts[split] = min(facts[split], limit) if limit else facts[split]
  facts["size"] = c.data.image_size or facts["size"]
  if not facts["size"]:
    raise ValueError(f"{c.data.name} has images of any size: set data.image_size")
  return facts


def flops_per_image(c: ml_collections.ConfigDict, facts: dict[str, Any]) -> tuple[float, float]:
  """(training FLOPs, evaluation FLOPs) of one image: XLA's cost analysis of the
  gradient of the model in train mode and of its forward pass in eval mode."""
  model = classification.build_classifier(
      c, num_classes=facts["classes"], num_channels=facts["channels"],
      mean=(0.5,) * facts["channels"], std=(0.5,) * facts["channels"])
  batch = 2
  x = jax.ShapeDtypeStruct((batch, facts["size"], facts["size"], facts["channels"]), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  rest = {k: v for k, v in variables.items() if k != "params"}

  def train_loss(params, rest, images):
    (logits, _), _ = model.apply({"params": params, **rest}, images, train=True,
                                 mutable=list(rest), rngs={"dropout": jax.random.key(0)})
    return logits.astype(jnp.float32).sum()

  def forward(variables, images):
    return model.apply(variables, images, train=False)[0]

  train = jax.jit(jax.grad(train_loss)).lower(variables["params"], rest, x).cost_analysis()
  evaluate = jax.jit(forward).lower(variables, x).cost_analysis()
  return train["flops"] / batch, evaluate["flops"] / batch


def run_cost(c: ml_collections.ConfigDict, facts: dict[str, Any],
             flops: tuple[float, float]) -> dict[str, float]:
  """Steps, images and FLOPs of one run (the trainer's step and evaluation rules)."""
  steps_per_epoch = max(facts["train"] // c.train.batch_size, 1)
  steps = c.train.num_steps or max(int(round(c.train.epochs * steps_per_epoch)), 1)
  eval_every = c.train.eval_every_steps or steps_per_epoch
  evals = 0 if c.mode == "train" else (steps - 1) // eval_every + 1
  train_images = steps * c.train.batch_size
  eval_images = evals * facts["eval"]
  return {"steps": steps, "epochs": steps / steps_per_epoch, "train_images": train_images,
          "eval_images": eval_images,
          "flops": train_images * flops[0] + eval_images * flops[1]}


def device_hours(cost: dict[str, float], flops: tuple[float, float], *, dtype: str, device: str,
                 utilization: float, images_per_s: float = 0.0) -> tuple[float, float]:
  """(accelerator-hours, training images/s per device) at the assumed or given rate."""
  if device not in PEAK_TFLOPS:
    raise ValueError(f"unknown device {device!r}; known: {sorted(PEAK_TFLOPS)}")
  peak = PEAK_TFLOPS[device][0 if dtype == "bfloat16" else 1] * 1e12
  rate = images_per_s or peak * utilization / flops[0]
  seconds = cost["train_images"] / rate + cost["eval_images"] * flops[1] / (rate * flops[0])
  return seconds / 3600, rate


def print_estimate(runs: list[grid_lib.Run], extra: list[str], *, device: str,
                   utilization: float | None, images_per_s: float = 0.0) -> float:
  """Prints a Markdown table of the grid's cost (runs differing only by seed share a
  row) and returns the total accelerator-hours."""
  utilization = UTILIZATION if utilization is None else utilization
  if device not in PEAK_TFLOPS:
    raise ValueError(f"unknown device {device!r}; known: {sorted(PEAK_TFLOPS)}")
  bf16, f32 = PEAK_TFLOPS[device]
  rate_note = (f"{images_per_s:g} training images/s per device (given)" if images_per_s else
               f"{utilization:.0%} of its peak ({bf16:g} TFLOP/s bfloat16, {f32:g} float32)")
  print(f"Cost on {device}: {rate_note}.\n")
  print("| run | runs | steps | epochs | train GFLOP/image | images/s/device | "
        "device-hours per run | device-hours |")
  print("|---|---|---|---|---|---|---|---|")
  rows: dict[str, list] = {}
  for run in runs:
    key = "_".join(f"{k.split('.')[-1]}={v}" for k, v in run.params.items()
                   if not grid_lib.is_seed(k)) or run.name
    if key in rows:
      rows[key][0] += 1
      continue
    c = load_config(run.config, [*run.overrides, *extra])
    facts = dataset_facts(c)
    flops = flops_per_image(c, facts)
    cost = run_cost(c, facts, flops)
    hours, rate = device_hours(cost, flops, dtype=c.model.dtype, device=device,
                               utilization=utilization, images_per_s=images_per_s)
    rows[key] = [1, cost, flops, rate, hours]
  total = 0.0
  for key, (n, cost, flops, rate, hours) in rows.items():
    total += n * hours
    print(f"| {key} | {n} | {cost['steps']:,} | {cost['epochs']:.4g} | {flops[0] / 1e9:.2f} | "
          f"{rate:,.0f} | {_hours(hours)} | {_hours(n * hours)} |")
  print(f"\nTotal: {_hours(total)} {device}-hours ({total / 24:.3g} device-days).")
  return total


def _hours(x: float) -> str:
  """Three significant digits, thousands separated."""
  return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
