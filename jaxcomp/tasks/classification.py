"""Image classification: a zoo backbone (optionally behind a JPEG-DL layer) on a dataset.

Batches carry uint8 images; the loss converts them to [0, 1] floats on the
device, so the host ships 4x fewer bytes. With a JPEG-DL layer the task sets
its tables before step 0 (`prepare`, by the registered `TABLE_INITS` recipe of
`model.jpeg.init`), scales their gradients (LSQ, `gradient_transform`) and
projects them into range after each update (`update_transform`); their
optimizer is a parameter group of the config (`("^jpeg_layer/", "jpeg_optim")`).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Iterator


import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp import checkpoint
from jaxcomp import data as data_lib
from jaxcomp import models as models_lib
from jaxcomp import parallel
from jaxcomp.layers import jpeg_layer as jpeg_layer_lib
from jaxcomp.layers import jpeg_table_recipes
from jaxcomp.models.classifier import ImageClassifier
from jaxcomp.models.registry import DTYPES
from jaxcomp.ops import jpeg_transform
from jaxcomp.registry import Registry
from jaxcomp.tasks.base import TASKS, Batch, Task, Variables

# `model.jpeg.init` -> init(task, images) -> (luma, chroma) steps, or None to keep the
# layer's quality tables. `images` is an iterator of training batches.
TABLE_INITS: Registry = Registry("JPEG table init")
# `model.jpeg.sensitivity_bn` -> whether the sensitivity pass runs BatchNorm in train
# mode (batch statistics, the authors' code) or eval mode (running statistics).
BN_MODES: Registry[bool] = Registry("BatchNorm mode")
BN_MODES.register("train", True)
BN_MODES.register("eval", False)
# `model.jpeg.step_floor` -> floor(layer, luma, chroma) -> (luma, chroma), applied to
# the initial tables.
STEP_FLOORS: Registry = Registry("JPEG step floor")
STEP_FLOORS.register("none", lambda layer, luma, chroma: (luma, chroma))


@STEP_FLOORS.register("no_clip")
def _no_clip_floor(layer, luma, chroma):
  """Steps floored at B / (2**(b-1) - 1) (B: `jpeg_transform.coefficient_bounds`), so that no
  coefficient of an image in [0, 1] clips in the b-bit window at the start (luma DC:
  1024 / 127 = 8.06 at b = 8); the chroma table takes the larger of the Cb, Cr bounds."""
  if layer.bits == "auto":
    return luma, chroma
  bounds = jpeg_transform.coefficient_bounds(layer.num_channels) / (2 ** (layer.bits - 1) - 1)
  luma = np.maximum(luma, bounds[0]).astype(np.float32)
  if chroma is not None:
    chroma = np.maximum(chroma, bounds[1:].max(axis=0)).astype(np.float32)
  return luma, chroma


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


def logits_fn(model: Any, variables: Variables, *, train_mode: bool
              ) -> Callable[[jax.Array], jax.Array]:
  """`images -> logits` of a classifier, in eval mode or in train mode.

  Train mode (the authors' sensitivity pass): BatchNorm normalises with the
  batch's statistics (the running ones are not updated) and dropout, if any,
  draws from a fixed key. A model without BatchNorm or dropout gives the same
  logits in both modes.
  """
  mutable = [k for k in variables if k != "params"] if train_mode else []
  rngs = {"dropout": jax.random.key(0)} if train_mode else {}

  def fn(images: jax.Array) -> jax.Array:
    if mutable:
      return model.apply(variables, images, train=True, mutable=mutable, rngs=rngs)[0][0]
    return model.apply(variables, images, train=train_mode, rngs=rngs)[0]

  return fn


def build_jpeg_layer(cfg: Any, num_channels: int) -> jpeg_layer_lib.JpegLayer:
  """The JPEG-DL layer a `config.model.jpeg` section describes (`config_lib.jpeg_layer_config`).

  `init`, `sensitivity_checkpoint`, `sensitivity_images` and `q_max` drive the
  task's `prepare` (`TABLE_INITS`); until then the layer holds the quality tables.
  """
  if cfg.init not in TABLE_INITS:
    raise ValueError(f"unknown JPEG layer init {cfg.init!r}; expected one of "
                     f"{TABLE_INITS.names()}")
  return jpeg_layer_lib.JpegLayer(
      num_channels=num_channels, rounds=cfg.rounds, quality=cfg.quality,
      quality_divisor=cfg.quality_divisor, q_min=cfg.q_min, alpha=cfg.alpha,
      alpha_mode=cfg.alpha_mode, hardness=cfg.hardness, num_candidates=cfg.num_candidates,
      bits=cfg.bits)


def build_classifier(config: ml_collections.ConfigDict, *, num_classes: int,
                     num_channels: int, mean: tuple[float, ...],
                     std: tuple[float, ...]) -> ImageClassifier:
  """The model `config.model` describes, for a dataset's classes and statistics."""
  dtype = DTYPES.get(config.model.dtype)
  kwargs = {"width": config.model.width} if config.model.width else {}
  factory = models_lib.MODELS.get(config.model.name)
  try:
    backbone = factory(num_classes=num_classes, dtype=dtype, **kwargs)
  except TypeError as e:
    raise ValueError(f"model.width={config.model.width} does not apply to model "
                     f"{config.model.name!r} ({e})") from None
  jpeg_layer = build_jpeg_layer(config.model.jpeg, num_channels) if config.model.jpeg_layer \
      else None
  return ImageClassifier(backbone=backbone, mean=tuple(mean), std=tuple(std),
                         jpeg_layer=jpeg_layer)


TABLE_INITS.register("quality", lambda task, batches: None)


def export_steps(layer_params: dict) -> tuple[np.ndarray, np.ndarray | None]:
  """The float steps (luma, chroma or None) of a layer's first round."""
  p = layer_params["round_0"]
  return (np.asarray(p["luma_q"], np.float32),
          np.asarray(p["chroma_q"], np.float32) if "chroma_q" in p else None)


@TABLE_INITS.register("lsq")
def _lsq_init(task: "ClassificationTask", batches):
  """LSQ-style steps from one training batch (JPEG_DL.md, ImageNet recipe)."""
  images = to_unit_float(jnp.asarray(next(batches)["image"]))
  bits = task.config.model.jpeg.bits
  if bits == "auto":
    raise ValueError("model.jpeg.init='lsq' needs an integer model.jpeg.bits (LSQ's Q_P = "
                     "2**(b-1)); bits='auto' has no fixed window")
  return jpeg_table_recipes.lsq_tables(images, bits=bits)


@TABLE_INITS.register("sensitivity")
def _sensitivity_init(task: "ClassificationTask", batches):
  """From the gradients of a classifier trained without the layer (JPEG_DL.md)."""
  cfg = task.config.model.jpeg
  logits = task.pretrained_logits_fn(cfg.sensitivity_checkpoint,
                                     train_mode=BN_MODES.get(cfg.sensitivity_bn))
  needed = -(-cfg.sensitivity_images // task.config.train.batch_size)
  pairs = ((to_unit_float(jnp.asarray(b["image"])), b["label"])
           for _, b in zip(range(needed), batches))
  return jpeg_table_recipes.sensitivity_tables(logits, pairs, q_max=cfg.q_max)


@TASKS.register("classification")
class ClassificationTask(Task):
  """Supervised classification with cross-entropy (see `tasks.base.Task`)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    super().__init__(config, mesh)
    self.train_ds = data_lib.get_dataset(config.data, config.data.train_split)
    self.eval_ds = data_lib.get_dataset(config.data, config.data.eval_split)
    parallel.check_batch_divisible(config.train.batch_size, mesh)
    parallel.check_batch_divisible(config.eval.batch_size, mesh)
    self.num_classes = self.train_ds.num_classes
    self.model = build_classifier(
        config, num_classes=self.num_classes, num_channels=self.train_ds.image_shape[-1],
        mean=self.train_ds.mean, std=self.train_ds.std)
    self.steps_per_epoch = max(len(self.train_ds) // config.train.batch_size, 1)

  # --- the JPEG-DL layer's hooks ------------------------------------------------
  def lsq_grad_scale(self) -> float:
    """LSQ gradient scale of a step size (Esser et al. 2020, Sec. 2.2): 1 / sqrt(N * Q_P),
    N the coefficients one table entry quantizes per image (its 8x8 blocks),
    Q_P = 2**(b-1) - 1 the largest index."""
    h, w, _ = self.train_ds.image_shape
    blocks = -(-h // 8) * -(-w // 8)
    bits = self.config.model.jpeg.bits
    if bits == "auto":
      raise ValueError("model.jpeg.lsq_grad_scale needs an integer model.jpeg.bits")
    return float(1.0 / np.sqrt(blocks * (2 ** (bits - 1) - 1)))

  def prepare(self, state: Any) -> Any:
    """At step 0, sets the JPEG-DL tables by `model.jpeg.init` (`TABLE_INITS`).

    "sensitivity": from the gradients of a classifier trained without the layer
    (`model.jpeg.sensitivity_checkpoint`, a workdir of this same config with
    `model.jpeg_layer=False`) on `model.jpeg.sensitivity_images` augmented training
    images (JPEG_DL.md, "Initialisation"). "lsq": from one training batch.
    The backbone keeps its fresh initialisation (joint training from scratch).
    """
    if not self.config.model.jpeg_layer:
      return state
    if int(state.step) == 0:
      batches = self.train_iterator(seed=self.config.seed, start_step=0)
      layer = self.model.jpeg_layer
      tables = TABLE_INITS.get(self.config.model.jpeg.init)(self, batches)
      if tables is None:
        tables = export_steps(state.params["jpeg_layer"])
      tables = STEP_FLOORS.get(self.config.model.jpeg.step_floor)(layer, *tables)
      params = dict(state.params)
      params["jpeg_layer"] = jpeg_layer_lib.set_tables(params["jpeg_layer"], *tables)
      state = state.replace(params=params)
    self.log_jpeg_diagnostic(state.params)
    return state

  def log_jpeg_diagnostic(self, params: Any) -> dict[str, float]:
    """Logs `jpeg_layer.diagnose` on the first training batch (a warning when the layer's
    output is far from its input); returns the numbers."""
    first = next(self.train_iterator(seed=self.config.seed, start_step=0))
    stats = jpeg_layer_lib.diagnose(self.model.jpeg_layer, params["jpeg_layer"],
                                    to_unit_float(jnp.asarray(first["image"])))
    line, _ = jpeg_layer_lib.diagnostic_message(stats, self.model.jpeg_layer)
    print(line, file=sys.stderr, flush=True)   # a warning line when it is one
    return stats

  def gradient_transform(self) -> optax.GradientTransformation | None:
    """The LSQ scale of the tables' gradients, when `model.jpeg.lsq_grad_scale`."""
    if not (self.config.model.jpeg_layer and self.config.model.jpeg.lsq_grad_scale):
      return None
    return optax.masked(optax.scale(self.lsq_grad_scale()), lambda params: (
        jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == "jpeg_layer", params)))

  def update_transform(self) -> optax.GradientTransformation | None:
    """The authors' projection of the tables into [q_min, 255] after each update."""
    if not self.config.model.jpeg_layer:
      return None
    return jpeg_layer_lib.project_tables(q_min=self.config.model.jpeg.q_min)

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

  def pretrained_logits_fn(self, workdir: str, *, train_mode: bool = False):
    """Logits (`logits_fn`) of the model checkpointed in `workdir` (no JPEG layer).

    Args:
      workdir: a run of this config with `model.jpeg_layer=False`.
      train_mode: as the authors' sensitivity pass (see `logits_fn`), else eval mode.
    """
    if not workdir:
      raise ValueError("model.jpeg.init='sensitivity' needs model.jpeg.sensitivity_checkpoint: "
                       "the workdir of a run of this config with model.jpeg_layer=False")
    _, state, _ = checkpoint.read_run(workdir)
    variables = {"params": state["params"], **state["collections"]}
    return logits_fn(self.model.clone(jpeg_layer=None), variables, train_mode=train_mode)

  def apply_fn(self, variables: Variables, images: jax.Array) -> jax.Array:
    """Eval-mode logits of [0, 1] images: the `apply_fn` attacks take."""
    logits, _ = self.model.apply(variables, images, train=False)
    return logits

  def forward(self, variables: Variables, batch: Batch, rng: jax.Array, *,
              train: bool) -> tuple[jax.Array, Variables]:
    """Logits [B, K] of the batch's images and, in training, the updated non-param collections."""
    images = to_unit_float(batch["image"])
    mutable = [k for k in variables if k != "params"] if train else []
    rngs = {"dropout": rng} if train else {}
    if not mutable:
      return self.model.apply(variables, images, train=train, rngs=rngs)[0], {}
    (logits, _), updates = self.model.apply(variables, images, train=True, mutable=mutable,
                                            rngs=rngs)
    return logits, updates

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    logits, updates = self.forward(variables, batch, rng, train=train)
    per_example = cross_entropy(logits, batch["label"], num_classes=self.num_classes,
                                label_smoothing=self.config.train.label_smoothing)
    loss = per_example.mean()
    accuracy = (jnp.argmax(logits, -1) == batch["label"]).mean()
    return loss, ({"loss": loss, "accuracy": accuracy}, updates)

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

