"""The 11-input network of paper 003 trained on a classification run (task "multi_version").

The trunk is the classifier of `config.hrs.checkpoint`, a finished
"classification" run of the same `config.model` and `config.data.name`
(configs/hrs.py copies both sections from the run's config.json). `prepare`
loads it at step 0; `MultiVersionNet` shares it over the original and its
JPEG versions at `config.hrs.qualities`, in inference mode and behind a
`stop_gradient`, and the config freezes its parameters
(`config.optim_groups = (("^trunk/", "frozen"),)`): only the fusion weights and
the new head train ("partially trained", as the paper's abstract says).

Data: every batch of the run's dataset (augmented as the run's, for training)
is expanded on the host, batch by batch, to its V = 1 + len(qualities)
versions: the batch itself, then its Pillow JPEG round trips (libjpeg-turbo,
4:2:0 for RGB; `jaxcomp.codecs.jpeg_files.jpeg_roundtrip`), as
`jaxcomp.selection.jpeg_versions` makes them for the selectors. Nothing is
cached: for CIFAR-10 this is 1,280 Pillow round trips of 32x32 images per
batch of 128.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp import checkpoint
from jaxcomp import config_lib
from jaxcomp import data as data_lib
from jaxcomp import parallel
from jaxcomp import selection
from jaxcomp.codecs.jpeg_files import jpeg_roundtrip
from jaxcomp.models.multi_version import FUSIONS, MultiVersionNet, load_trunk
from jaxcomp.tasks.base import TASKS, Batch, Variables
from jaxcomp.tasks.classification import ClassificationTask, cross_entropy, to_unit_float


def hrs_qualities(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """`config.hrs.qualities` checked (`selection.check_qualities`).

  Raises:
    ConfigError: not integers in 1..100, strictly decreasing, at least one.
  """
  try:
    return selection.check_qualities(tuple(config.hrs.qualities))
  except ValueError as e:
    raise config_lib.ConfigError(f"hrs.qualities: {e}") from None


def hrs_run_config(config: ml_collections.ConfigDict, *, sections: Sequence[str] = ("data",)
                   ) -> dict[str, Any]:
  """The config.json of the classification run `config.hrs.checkpoint`, checked against `config`.

  Args:
    config: an hrs config (configs/hrs.py).
    sections: "data" compares `data.name`; "model" compares the whole model section.

  Raises:
    ConfigError: `hrs.checkpoint` is empty, the run is not a classification
      run, or its data / model differ from `config`'s.
    FileNotFoundError: `hrs.checkpoint` is not a run directory.
  """
  ckpt = config.hrs.checkpoint
  if not ckpt:
    raise config_lib.ConfigError(
        "hrs.checkpoint is empty: set it to the workdir of a trained classification run "
        "(--config=configs/hrs.py:checkpoint=RUN)")
  run = checkpoint.read_config(ckpt)
  if run.get("task", "classification") != "classification":
    raise config_lib.ConfigError(f"hrs.checkpoint={ckpt!r} is a {run['task']!r} run, not a "
                                 "classification run")
  if "data" in sections and run["data"]["name"] != config.data.name:
    raise config_lib.ConfigError(
        f"data.name={config.data.name!r} but the run {ckpt!r} trained on "
        f"{run['data']['name']!r} (configs/hrs.py:checkpoint=RUN copies the run's data section)")
  if "model" in sections:
    mine = json.loads(config.model.to_json_best_effort())   # as the trainer wrote the run's
    differ = sorted(k for k in set(mine) | set(run["model"]) if mine.get(k) != run["model"].get(k))
    if differ:
      raise config_lib.ConfigError(
          f"model differs from the run {ckpt!r} in {differ} (configs/hrs.py:checkpoint=RUN "
          "copies the run's model section)")
  return run


def expand_versions(images: np.ndarray, qualities: Sequence[int]) -> np.ndarray:
  """An image batch and its Pillow JPEG versions, version axis second.

  Args:
    images: uint8 [B, H, W, C], C = 3 (encoded 4:2:0) or 1.
    qualities: JPEG qualities (checked by the caller: `hrs_qualities`).

  Returns:
    uint8 [B, V, H, W, C], V = 1 + len(qualities): the images, then the decoded
    JPEG at each quality (the `MultiVersionNet` input layout).
  """
  versions = [jpeg_roundtrip(images, quality=q, subsampling="4:2:0")[0] for q in qualities]
  return np.stack([np.asarray(images), *versions], axis=1)


@TASKS.register("multi_version")
class MultiVersionTask(ClassificationTask):
  """A classification run's trunk over V JPEG versions, fused, with a new head (module docstring).

  Inherits the data, the loss and the cross-entropy of `ClassificationTask`;
  the model is a `MultiVersionNet` whose trunk is the run's `ImageClassifier`.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    self.qualities = hrs_qualities(config)
    if config.hrs.fusion not in FUSIONS:
      raise config_lib.ConfigError(f"hrs.fusion={config.hrs.fusion!r} is not one of {FUSIONS}")
    hrs_run_config(config, sections=("data", "model"))
    super().__init__(config, mesh)
    self.trunk = self.model
    self.model = MultiVersionNet(self.trunk, num_classes=self.num_classes,
                                 fusion=config.hrs.fusion)

  def prepare(self, state: Any) -> Any:
    """At step 0, the trunk's variables become the run's (its EMA parameters if it kept them)."""
    if int(state.step) == 0:
      _, run_state, _ = checkpoint.read_run(self.config.hrs.checkpoint)
      variables = load_trunk({"params": state.params, **state.collections},
                             checkpoint.eval_variables(run_state))
      params = variables.pop("params")
      state = state.replace(params=params, collections=variables)
    return state

  def gradient_transform(self) -> optax.GradientTransformation | None:
    return None        # the trunk (and any JPEG-DL layer in it) is frozen

  def update_transform(self) -> optax.GradientTransformation | None:
    return None

  def train_iterator(self, *, seed: int, start_step: int) -> Iterator[Batch]:
    """The run's training batches, each expanded to {"image": uint8 [B, V, H, W, C], "label"}."""
    for batch in super().train_iterator(seed=seed, start_step=start_step):
      yield {**batch, "image": expand_versions(batch["image"], self.qualities)}

  @functools.cached_property
  def _eval_step(self):
    def step(variables: Variables, batch: Batch) -> dict[str, jax.Array]:
      logits, _ = self.model.apply(variables, to_unit_float(batch["image"]), train=False)
      mask = batch["mask"].astype(jnp.float32)
      ranks = selection.label_ranks(logits, batch["label"])
      per_example = cross_entropy(logits, batch["label"], num_classes=self.num_classes)
      return {"loss_sum": (per_example * mask).sum(), "top1": ((ranks < 1) * mask).sum(),
              "top5": ((ranks < 5) * mask).sum(), "count": mask.sum()}
    return jax.jit(step)

  def evaluate(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Top-1 ("accuracy") and top-5 accuracy and mean cross-entropy over the eval split."""
    totals = {"loss_sum": 0.0, "top1": 0.0, "top5": 0.0, "count": 0.0}
    for batch in data_lib.eval_batches(
        self.eval_ds, batch_size=self.config.eval.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count()):
      batch = {**batch, "image": expand_versions(batch["image"], self.qualities)}
      out = self._eval_step(variables, parallel.host_to_global(batch, mesh))
      for k, v in jax.device_get(out).items():
        totals[k] += float(v)
    count = max(totals["count"], 1.0)
    return {"accuracy": totals["top1"] / count, "top5": totals["top5"] / count,
            "loss": totals["loss_sum"] / count, "num_examples": int(totals["count"])}
