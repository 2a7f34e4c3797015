"""RePr (Ch. 5 of the Brandeis thesis, papers/001): classification trained by Algorithm 3.

`ReprTask` ("repr") is the classification task with the schedule as task events
(`tasks.base.Task.event_steps` / `on_step_end`). Round r of N (steps from the
start of the run, S = S1 + S2):

  step r S + S1   drop: rank every conv filter by `repr.metric` (`RANKINGS`), drop
                  the top `repr.fraction` of them (one global ranking, Sec. 5.5);
  step (r + 1) S  re-introduce: the dropped filters re-initialised orthogonally to
                  the kept ones of their layer (`REINITS`), their conv bias, BatchNorm
                  scale / offset / running statistics and optimizer moments reset,
                  nothing else touched (Algorithm 3, lines 10-12).

Where the schedule's state lives, so that a checkpoint holds it and a resumed
run neither repeats nor skips an event:
  * the masks of the forward pass: the model collection "repr_masks" of the train
    state, a `jaxcomp.repr.masks` mask tree (1 = kept); `loss`, `evaluate` and
    `apply_fn` multiply the parameters by it, so a dropped filter outputs zero;
  * the masks of the updates: the state of `masks.mask_updates()`, the task's
    `update_transform` (after weight decay and momentum / Adam), so a dropped
    filter's stored parameters stay bit-identical while it is dropped.
The events set both; which filters are dropped is read back from the masks.

Options: the orthogonality loss (`repr.ortho_loss_weight`; Sec. 5.6 "OL", lambda =
0.01 in Table 5.2); knowledge distillation from a trained run
(`repr.teacher_checkpoint`, Table 5.3; Hinton et al. 2015:
`(1 - a) CE + a T^2 KL(softmax(t / T) || softmax(s / T))`, a = `repr.kd_weight`,
T = `repr.kd_temperature`; the thesis does not give its form). With `repr.rounds =
0` the task is standard training with the same loss and logging: the baselines.

Every train row logs `ortho_sum` (`ortho_sum`: Eq. 5.2 summed over the network,
the "Ortho-sum" of Fig. 5.9), and each event writes a record with the per-layer
counts of dropped filters to `metrics.jsonl` (`"split": "event"`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from jaxcomp import checkpoint
from jaxcomp import config_lib
from jaxcomp import parallel
from jaxcomp.registry import Registry
from jaxcomp.repr import layers as layers_lib
from jaxcomp.repr import masks as masks_lib
from jaxcomp.repr import ranking
from jaxcomp.repr import reinit
from jaxcomp.repr import selection
from jaxcomp.tasks.base import TASKS, Batch, Variables
from jaxcomp.tasks.classification import ClassificationTask, build_classifier, cross_entropy
from jaxcomp.tasks.classification import to_unit_float

MASKS = "repr_masks"        # the model collection holding the forward-pass masks
_EVENT_SALT = 0x5E9E        # event keys: fold_in(fold_in(state.rng, step), salt + i)

# `repr.metric` -> scores(task, state, step) -> {layer path: [C] float32 drop scores}
# (higher = dropped first; `jaxcomp.repr.ranking`). Called at a drop event, when every
# filter is kept.
RANKINGS: Registry[Callable[..., dict[str, jax.Array]]] = Registry("RePr ranking")
# `repr.reinit` -> reinit(params, dropped, key) -> params with the dropped filters'
# kernels and conv biases re-initialised (`jaxcomp.repr.reinit.reinit_filters`).
REINITS: Registry[Callable[..., Any]] = Registry("RePr re-init")
REINITS.register("thesis", functools.partial(reinit.reinit_filters, variant="thesis"))
REINITS.register("official", functools.partial(reinit.reinit_filters, variant="official"))


def ortho_sum(params: Any) -> jax.Array:
  """`sum_l sum_f O_l^f` over the filters in use of every conv of `params` (Eq. 5.2):
  Fig. 5.9's "Ortho-sum"; lower means less overlapping filters.

  Pass the weights the network uses (masked). An all-zero (dropped) filter counts 0:
  it overlaps with nothing, and its own O = 1 / J_l (the diagonal |0 - 1|) is left out.

  Returns:
    scalar float32 >= 0, less than the number of filters.
  """
  total = jnp.zeros((), jnp.float32)
  for k in layers_lib.conv_kernels(params).values():
    in_use = jnp.any(k.reshape(-1, k.shape[-1]) != 0, axis=0)
    total += jnp.sum(jnp.where(in_use, ranking.inter_filter_orthogonality(k), 0.0))
  return total


def distillation_loss(logits: jax.Array, teacher_logits: jax.Array, *,
                      temperature: float) -> jax.Array:
  """`T^2 KL(softmax(t / T) || softmax(s / T))`, mean over the batch (Hinton et al. 2015).

  Args:
    logits: [B, K] student logits.
    teacher_logits: [B, K] teacher logits (no gradient flows into them).
    temperature: T > 0; T^2 keeps the gradient scale of the soft term independent of T.

  Returns:
    scalar float32 >= 0.
  """
  t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature)
  s = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature)
  return temperature ** 2 * jnp.mean(jnp.sum(jnp.exp(t) * (t - s), axis=-1))


def dropped_filters(params: Any, masks: masks_lib.Masks) -> dict[str, jax.Array]:
  """{layer path: [C_out] bool, True = dropped} read from a mask tree (its kernels' masks)."""
  flat = traverse_util.flatten_dict(masks)
  return {path: flat[layer.kernel] == 0
          for path, layer in layers_lib.filter_layers(params).items()}


def _params_only(metric: str) -> Callable[..., dict[str, jax.Array]]:
  return lambda task, state, step: ranking.drop_scores(metric, state.params)


for _metric in ("ortho", "ortho_official", "weight_norm"):
  RANKINGS.register(_metric, _params_only(_metric))


@RANKINGS.register("gradient")
def _gradient(task: "ReprTask", state: Any, step: int) -> dict[str, jax.Array]:
  return ranking.drop_scores("gradient", state.params, grads=task.mean_gradient(state, step))


@RANKINGS.register("taylor")
def _taylor(task: "ReprTask", state: Any, step: int) -> dict[str, jax.Array]:
  return ranking.drop_scores("taylor", state.params, grads=task.mean_gradient(state, step))


def _response_scores(metric: str) -> Callable[..., dict[str, jax.Array]]:
  def scores(task: "ReprTask", state: Any, step: int) -> dict[str, jax.Array]:
    variables = task.effective_variables({"params": state.params, **state.collections})
    per_batch = [ranking.drop_scores(metric, state.params,
                                     responses=task.responses(variables, b["image"]))
                 for b in task.rank_batches(step)]
    return jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), axis=0), *per_batch)
  return scores


for _metric in ("activation_norm", "apoz"):
  RANKINGS.register(_metric, _response_scores(_metric))


@RANKINGS.register("random")
def _random(task: "ReprTask", state: Any, step: int) -> dict[str, jax.Array]:
  return ranking.drop_scores("random", state.params, key=task.event_key(state, step, 0))


@RANKINGS.register("oracle")
def _oracle(task: "ReprTask", state: Any, step: int) -> dict[str, jax.Array]:
  """The greedy Oracle (Sec. 5.3) on `repr.rank_batches` training batches, eval mode:
  `fraction * F` greedy steps of F forward passes each; small nets only."""
  params = state.params
  rest = {k: v for k, v in state.collections.items() if k != MASKS}
  batches = task.rank_batches(step)
  excluded = task.excluded_layers(params)
  sizes = {p: layer.num_filters for p, layer in layers_lib.filter_layers(params).items()
           if p not in excluded}

  def loss_fn(dropped):
    variables = {**rest, "params": masks_lib.apply_masks(
        params, masks_lib.filter_masks(params, dropped))}
    return jnp.mean(jnp.stack([task.eval_cross_entropy(variables, b) for b in batches]))

  scores = ranking.greedy_oracle(loss_fn, sizes,
                                 int(task.config.repr.fraction * sum(sizes.values())))
  return {**scores, **{p: jnp.zeros((layers_lib.filter_layers(params)[p].num_filters,))
                       for p in excluded}}


@TASKS.register("repr")
class ReprTask(ClassificationTask):
  """Classification trained with the RePr schedule (module doc; config section `repr`).

  Attributes:
    s1_steps, s2_steps: S1 and S2 in optimizer steps.
    events: {step: ("drop" | "reintroduce", round)}.
    teacher: (model, variables) of the distillation teacher, or None.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    super().__init__(config, mesh)
    cfg = config.repr
    self.s1_steps = cfg.s1_steps or int(round(cfg.s1_epochs * self.steps_per_epoch))
    self.s2_steps = cfg.s2_steps or int(round(cfg.s2_epochs * self.steps_per_epoch))
    if cfg.rounds and (self.s1_steps < 1 or self.s2_steps < 1):
      raise config_lib.ConfigError(
          f"repr: S1 and S2 must be at least one step, got {self.s1_steps} and "
          f"{self.s2_steps} (repr.s1_epochs / s2_epochs x {self.steps_per_epoch} steps per epoch)")
    period = self.s1_steps + self.s2_steps
    self.events: dict[int, tuple[str, int]] = {}
    for r in range(cfg.rounds):
      self.events[r * period + self.s1_steps] = ("drop", r)
      self.events[(r + 1) * period] = ("reintroduce", r)
    self.teacher = self._load_teacher(cfg.teacher_checkpoint) if cfg.teacher_checkpoint else None

  # --- state ----------------------------------------------------------------------
  def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
    """The classifier's variables plus the "repr_masks" collection, every filter kept.

    Raises:
      ValueError: the model has no conv kernels.
    """
    variables = super().init_variables(rng, batch)
    try:
      variables[MASKS] = masks_lib.filter_masks(variables["params"], {})
    except ValueError as e:
      raise ValueError(f"task 'repr' needs a model with conv layers: {e}") from None
    return variables

  def update_transform(self) -> optax.GradientTransformation:
    """The classification task's (JPEG-DL projection, if any), then the filter masks, last."""
    parts = [t for t in (super().update_transform(), masks_lib.mask_updates()) if t is not None]
    return optax.chain(*parts)

  @staticmethod
  def effective_variables(variables: Variables) -> Variables:
    """`variables` with the masks multiplied into the parameters and the "repr_masks"
    collection removed: what the plain classifier applies."""
    if MASKS not in variables:
      return variables
    rest = {k: v for k, v in variables.items() if k not in ("params", MASKS)}
    return {**rest, "params": masks_lib.apply_masks(variables["params"], variables[MASKS])}

  # --- the schedule (events) ---------------------------------------------------------
  def event_steps(self, total_steps: int) -> tuple[int, ...]:
    """The drop and re-introduction steps (module doc).

    Raises:
      ConfigError: the N rounds do not fit in the run's `total_steps`.
    """
    if self.events and max(self.events) > total_steps:
      raise config_lib.ConfigError(
          f"repr: {self.config.repr.rounds} rounds of S1 + S2 = {self.s1_steps} + "
          f"{self.s2_steps} steps end at step {max(self.events)}, after the run's "
          f"{total_steps} steps")
    return tuple(sorted(self.events))

  def on_step_end(self, step: int, state: Any) -> tuple[Any, dict[str, Any]]:
    kind, r = self.events[step]
    return self.drop(step, state, r) if kind == "drop" else self.reintroduce(step, state, r)

  def event_key(self, state: Any, step: int, i: int) -> jax.Array:
    """Key i of the event after `step` (disjoint from the train steps' `fold_in(rng, step)`)."""
    return jax.random.fold_in(jax.random.fold_in(state.rng, step), _EVENT_SALT + i)

  def excluded_layers(self, params: Any) -> tuple[str, ...]:
    """The layers never dropped: the first conv when `repr.exclude_first`."""
    if not self.config.repr.exclude_first:
      return ()
    return (layers_lib.first_conv(params, image_channels=self.train_ds.image_shape[-1]),)

  def _with_masks(self, state: Any, masks: masks_lib.Masks, **changes: Any) -> Any:
    """`state` with `masks` in the forward pass and the updates (copies: the trainer
    donates the state, which must not hold one buffer twice), and `changes`."""
    collections = {**changes.pop("collections", state.collections), MASKS: masks}
    opt_state = masks_lib.set_masks(changes.pop("opt_state", state.opt_state),
                                    jax.tree.map(jnp.copy, masks))
    return state.replace(collections=collections, opt_state=opt_state, **changes)

  def drop(self, step: int, state: Any, round_: int) -> tuple[Any, dict[str, Any]]:
    """Algorithm 3, lines 5-6: rank, select the top `fraction` globally, mask them."""
    cfg = self.config.repr
    scores = RANKINGS.get(cfg.metric)(self, state, step)
    dropped, counts = selection.select_filters(
        scores, cfg.fraction, exclude=self.excluded_layers(state.params),
        max_fraction_per_layer=cfg.max_fraction_per_layer)
    masks = masks_lib.filter_masks(state.params, dropped)
    state = self._with_masks(state, masks)
    counts = {p: int(c) for p, c in counts.items()}
    return state, {"event": "repr_drop", "round": round_, "metric": cfg.metric,
                   "num_dropped": sum(counts.values()), "counts": counts,
                   "ortho_sum": float(ortho_sum(masks_lib.apply_masks(state.params, masks)))}

  def reintroduce(self, step: int, state: Any, round_: int) -> tuple[Any, dict[str, Any]]:
    """Algorithm 3, lines 10-12: re-initialise the dropped filters orthogonally to the
    kept ones, reset their conv bias, BatchNorm (scale, offset, running statistics)
    and optimizer moments, unmask them. Every other entry of the state is untouched."""
    masks = state.collections[MASKS]
    dropped = {p: d for p, d in dropped_filters(state.params, masks).items() if bool(d.any())}
    params = REINITS.get(self.config.repr.reinit)(state.params, dropped,
                                                  self.event_key(state, step, 1))
    # The host callback's outputs live on one device: back to the parameters' layout.
    params = jax.device_put(params, jax.tree.map(lambda x: x.sharding, state.params))
    variables = reinit.reset_bn({**state.collections, "params": params}, dropped)
    opt_state = masks_lib.reset_optimizer_moments(state.opt_state, masks)
    kept = masks_lib.filter_masks(params, {})
    state = self._with_masks(state, kept, params=variables.pop("params"), collections=variables,
                             opt_state=opt_state)
    counts = {p: int(d.sum()) for p, d in dropped.items()}
    return state, {"event": "repr_reintroduce", "round": round_,
                   "num_reinitialised": sum(counts.values()), "counts": counts,
                   "ortho_sum": float(ortho_sum(state.params))}

  # --- what the rankings need ----------------------------------------------------------
  def rank_batches(self, step: int) -> list[dict[str, jax.Array]]:
    """`repr.rank_batches` global training batches: those of steps `step`, `step` + 1, ..."""
    batches = self.train_iterator(seed=self.config.seed, start_step=step)
    return [parallel.host_to_global(next(batches), self.mesh)
            for _ in range(self.config.repr.rank_batches)]

  @functools.cached_property
  def _gradient_fn(self) -> Callable:
    def grad(variables, batch, rng):
      def loss(params):
        return self.loss({**variables, "params": params}, batch, rng, train=True)[0]
      return jax.grad(loss)(variables["params"])
    return jax.jit(grad)

  def mean_gradient(self, state: Any, step: int) -> Any:
    """dL/dparams of the training loss, averaged over the `rank_batches(step)`."""
    variables = {"params": state.params, **state.collections}
    grads = [self._gradient_fn(variables, b, self.event_key(state, step, 2 + i))
             for i, b in enumerate(self.rank_batches(step))]
    return jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), axis=0), *grads)

  @functools.cached_property
  def _responses_fn(self) -> Callable:
    return jax.jit(lambda variables, images: layers_lib.filter_responses(
        self.model, variables, to_unit_float(images)))

  def responses(self, variables: Variables, images: jax.Array) -> dict[str, jax.Array]:
    """Each conv's pre-ReLU responses [B, h, w, C] (`layers.filter_responses`, eval mode)."""
    return self._responses_fn(variables, images)

  def eval_cross_entropy(self, variables: Variables, batch: Batch) -> jax.Array:
    """Mean cross-entropy of a batch in eval mode (plain variables, no masks). jit-able."""
    logits, _ = self.model.apply(variables, to_unit_float(batch["image"]), train=False)
    return cross_entropy(logits, batch["label"], num_classes=self.num_classes).mean()

  # --- loss, evaluation -----------------------------------------------------------------
  def _load_teacher(self, workdir: str) -> tuple[Any, Variables]:
    """The classifier of a finished run of the same dataset, in eval mode (its masks folded in)."""
    teacher_config, state, _ = checkpoint.read_run(workdir)
    teacher_config = ml_collections.ConfigDict(teacher_config)
    if teacher_config.data.name != self.config.data.name:
      raise ValueError(f"repr.teacher_checkpoint {workdir} was trained on "
                       f"{teacher_config.data.name!r}, not {self.config.data.name!r}")
    model = build_classifier(teacher_config, num_classes=self.num_classes,
                             num_channels=self.train_ds.image_shape[-1],
                             mean=self.train_ds.mean, std=self.train_ds.std)
    variables = self.effective_variables(checkpoint.eval_variables(state))
    return model, jax.device_put(variables, parallel.replicated(self.mesh))

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    """Cross-entropy of the masked network (+ distillation, + orthogonality loss).

    Metrics: "loss", "accuracy", "cross_entropy", "ortho_sum" and, when on,
    "distillation", "ortho_loss". The gradient of a dropped filter is 0.
    """
    cfg = self.config.repr
    plain = self.effective_variables(variables)
    logits, updates = self.forward(plain, batch, rng, train=train)
    ce = cross_entropy(logits, batch["label"], num_classes=self.num_classes,
                       label_smoothing=self.config.train.label_smoothing).mean()
    metrics = {"cross_entropy": ce, "ortho_sum": ortho_sum(plain["params"]),
               "accuracy": (jnp.argmax(logits, -1) == batch["label"]).mean()}
    loss = ce
    if self.teacher is not None:
      model, teacher_variables = self.teacher
      teacher_logits, _ = model.apply(teacher_variables, to_unit_float(batch["image"]), train=False)
      metrics["distillation"] = distillation_loss(logits, teacher_logits,
                                                  temperature=cfg.kd_temperature)
      loss = (1.0 - cfg.kd_weight) * ce + cfg.kd_weight * metrics["distillation"]
    if cfg.ortho_loss_weight > 0:
      metrics["ortho_loss"] = ranking.orthogonality_loss(plain["params"],
                                                         weight=cfg.ortho_loss_weight)
      loss = loss + metrics["ortho_loss"]
    metrics["loss"] = loss
    return loss, (metrics, updates)

  def evaluate(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Top-1 accuracy and cross-entropy of the masked network over the eval split."""
    return super().evaluate(self.effective_variables(variables), mesh)

  def apply_fn(self, variables: Variables, images: jax.Array) -> jax.Array:
    """Eval-mode logits of the masked network on [0, 1] images."""
    return super().apply_fn(self.effective_variables(variables), images)

