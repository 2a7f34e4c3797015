"""Image classification: a zoo backbone (optionally behind a JPEG-DL layer) on a dataset.

Batches carry uint8 images; the loss converts them to [0, 1] floats on the
device, so the host ships 4x fewer bytes.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp import data as data_lib
from jaxcomp import models as models_lib
from jaxcomp import parallel
from jaxcomp.models.classifier import ImageClassifier
from jaxcomp.tasks.base import TASKS, Batch, Variables


def to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array, *, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy with optional label smoothing, [B]."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing > 0:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def build_classifier(config: ml_collections.ConfigDict, *, num_classes: int,
                     num_channels: int, mean: tuple[float, ...],
                     std: tuple[float, ...]) -> ImageClassifier:
  """The model `config.model` describes, for a dataset's classes and statistics."""
  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  kwargs = {"width": config.model.width} if config.model.width else {}
  factory = models_lib.MODELS.get(config.model.name)
  try:
    backbone = factory(num_classes=num_classes, dtype=dtype, **kwargs)
  except TypeError as e:
    raise ValueError(f"model.width={config.model.width} does not apply to model "
                     f"{config.model.name!r} ({e})") from None
  jpeg_layer = None
  if config.model.jpeg_layer:
    from jaxcomp.layers import jpeg_layer as jpeg_layer_lib  # pylint: disable=g-import-not-at-top
    jpeg_layer = jpeg_layer_lib.JpegLayer.from_config(config.model.jpeg, num_channels)
  return ImageClassifier(backbone=backbone, mean=tuple(mean), std=tuple(std),
                         jpeg_layer=jpeg_layer)


@TASKS.register("classification")
class ClassificationTask:
  """Supervised classification with cross-entropy (see `tasks.base.Task`)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    self.config = config
    self.mesh = mesh
    self.train_ds = data_lib.get_dataset(config.data, config.data.train_split)
    self.eval_ds = data_lib.get_dataset(config.data, config.data.eval_split)
    parallel.check_batch_divisible(config.train.batch_size, mesh)
    parallel.check_batch_divisible(config.eval.batch_size, mesh)
    self.num_classes = self.train_ds.num_classes
    self.model = build_classifier(
        config, num_classes=self.num_classes, num_channels=self.train_ds.image_shape[-1],
        mean=self.train_ds.mean, std=self.train_ds.std)
    self.steps_per_epoch = max(len(self.train_ds) // config.train.batch_size, 1)
    if config.model.jpeg_layer:
      # LSQ gradient scale of a step size (Esser et al. 2020, Sec. 2.2):
      # 1 / sqrt(N * Q_P), N the coefficients one table entry quantizes per image
      # (its 8x8 blocks), Q_P = 2**(b-1) - 1 the largest index.
      h, w, _ = self.train_ds.image_shape
      blocks = -(-h // 8) * -(-w // 8)
      self.lsq_grad_scale = float(1.0 / np.sqrt(blocks * (2 ** (config.model.jpeg.bits - 1) - 1)))

  # --- data ---------------------------------------------------------------
  def train_iterator(self, *, seed: int, start_step: int) -> Iterator[Batch]:
    return data_lib.train_batches(
        self.train_ds, batch_size=self.config.train.batch_size, seed=seed,
        start_step=start_step, augment=self.config.data.augment,
        process_index=jax.process_index(), process_count=jax.process_count())

  # --- model ----------------------------------------------------------------
  def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
    images = to_unit_float(jnp.asarray(batch["image"][:1]))
    variables = self.model.init(rng, images, train=False)
    return flax.core.unfreeze(variables)

  def prepare_params(self, params: Any) -> Any:
    """Sets the JPEG-DL tables from data when `model.jpeg.init` asks for it.

    "sensitivity": from the gradients of a classifier trained without the layer
    (`model.jpeg.sensitivity_checkpoint`, a workdir of this same config with
    `model.jpeg_layer=False`) on `model.jpeg.sensitivity_images` augmented training
    images (JPEG_DL.md, "Initialisation"). "lsq": from one training batch.
    The backbone keeps its fresh initialisation (joint training from scratch).
    """
    cfg = self.config.model.jpeg
    if not self.config.model.jpeg_layer or cfg.init == "quality":
      return params
    from jaxcomp.layers import jpeg_layer as jpeg_layer_lib  # pylint: disable=g-import-not-at-top
    batches = self.train_iterator(seed=self.config.seed, start_step=0)
    if cfg.init == "lsq":
      luma, chroma = jpeg_layer_lib.lsq_tables(to_unit_float(jnp.asarray(next(batches)["image"])),
                                               bits=cfg.bits)
    else:
      logits = self._pretrained_logits_fn(cfg.sensitivity_checkpoint)
      needed = -(-cfg.sensitivity_images // self.config.train.batch_size)
      pairs = ((to_unit_float(jnp.asarray(b["image"])), b["label"])
               for _, b in zip(range(needed), batches))
      luma, chroma = jpeg_layer_lib.sensitivity_tables(logits, pairs, q_max=cfg.q_max)
    return {**params, "jpeg_layer": jpeg_layer_lib.set_tables(params["jpeg_layer"], luma, chroma)}

  def _pretrained_logits_fn(self, workdir: str):
    """Eval-mode logits of the model checkpointed in `workdir` (no JPEG layer)."""
    from jaxcomp import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
    if not workdir:
      raise ValueError("model.jpeg.init='sensitivity' needs model.jpeg.sensitivity_checkpoint: "
                       "the workdir of a run of this config with model.jpeg_layer=False")
    ckpt = checkpoint_lib.Checkpointer(f"{workdir}/checkpoints")
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints for the sensitivity init")
    state = ckpt.restore(None)
    ckpt.close()
    model = self.model.clone(jpeg_layer=None)
    variables = {"params": state["params"], **state["collections"]}
    return lambda images: model.apply(variables, images, train=False)[0]

  def apply_fn(self, variables: Variables, images: jax.Array) -> jax.Array:
    """Eval-mode logits of [0, 1] images: the `apply_fn` attacks take."""
    logits, _ = self.model.apply(variables, images, train=False)
    return logits

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    images = to_unit_float(batch["image"])
    mutable = [k for k in variables if k != "params"] if train else []
    rngs = {"dropout": rng} if train else {}
    if mutable:
      (logits, _), updates = self.model.apply(variables, images, train=True, mutable=mutable,
                                              rngs=rngs)
    else:
      logits, _ = self.model.apply(variables, images, train=train, rngs=rngs)
      updates = {}
    per_example = cross_entropy(logits, batch["label"], num_classes=self.num_classes,
                                label_smoothing=self.config.train.label_smoothing)
    loss = per_example.mean()
    accuracy = (jnp.argmax(logits, -1) == batch["label"]).mean()
    return loss, ({"loss": loss, "accuracy": accuracy}, updates)

  def param_labels(self, params: Any) -> Any:
    """"jpeg" for the JPEG-DL tables, "default" for the backbone."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: ("jpeg" if k[0] == "jpeg_layer" else "default") for k in flat})

  # --- evaluation -------------------------------------------------------------
  @functools.cached_property
  def _compiled_eval_step(self):
    def step(variables, batch):
      images = to_unit_float(batch["image"])
      logits, _ = self.model.apply(variables, images, train=False)
      per_example = cross_entropy(logits, batch["label"], num_classes=self.num_classes)
      mask = batch["mask"].astype(jnp.float32)
      correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
      return {"loss_sum": (per_example * mask).sum(), "correct": (correct * mask).sum(),
              "count": mask.sum()}
    return jax.jit(step)

  def evaluate(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy over the whole eval split."""
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in data_lib.eval_batches(
        self.eval_ds, batch_size=self.config.eval.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count()):
      out = self._compiled_eval_step(variables, parallel.host_to_global(batch, mesh))
      for k, v in jax.device_get(out).items():
        totals[k] += float(v)
    count = max(totals["count"], 1.0)
    return {"accuracy": totals["correct"] / count, "loss": totals["loss_sum"] / count,
            "num_examples": int(totals["count"])}

