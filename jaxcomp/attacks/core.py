"""What every attack shares: the model protocol, input checks, losses, the result record.

Model protocol. An attack receives `apply_fn(params, images) -> logits [B, K]`
(deterministic), or a `Stochastic` model `apply_fn(params, images, key)` whose
output is `[B, K]` or, after `eot`, `[S, B, K]` (S draws of the defense's
randomness). Attacks call every model through `bind`, giving each forward pass
a fresh key split from the attack's key. Losses of `[S, B, K]` logits are the
mean of the per-draw losses (EOT: the gradient of the mean is the mean of the
gradients); predictions of `[S, B, K]` logits are the argmax of the mean
softmax.

Result convention (all attacks): `(adversarial_images, info)` where
`adversarial_images` is [B, H, W, C] in [0, 1] and `info` is a dict of [B]
arrays: "success" (bool: prediction != label, or == target when targeted, on
the returned images), and the norms of the perturbation actually used:
"linf", "l2", "rmse".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.attacks import budgets

ApplyFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Stochastic:
  """A randomised model `fn(params, images, key) -> logits` ([B, K] or [S, B, K])."""
  fn: Callable[[Any, jax.Array, jax.Array], jax.Array]

  def __call__(self, params: Any, images: jax.Array, key: jax.Array) -> jax.Array:
    return self.fn(params, images, key)


def bind(apply_fn: ApplyFn, params: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`(images, key) -> logits`, ignoring the key for a deterministic `apply_fn`."""
  if isinstance(apply_fn, Stochastic):
    return lambda x, key: apply_fn(params, x, key)
  return lambda x, key: apply_fn(params, x)


def mean_logits(logits: jax.Array) -> jax.Array:
  """[S, B, K] -> [B, K] mean over EOT draws; [B, K] unchanged."""
  return jnp.mean(logits, axis=0) if logits.ndim == 3 else logits


def predict(logits: jax.Array) -> jax.Array:
  """Labels [B]: argmax of the logits, or of the mean softmax over EOT draws."""
  if logits.ndim == 3:
    return jnp.argmax(jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0), axis=-1)
  return jnp.argmax(logits, axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross-entropy [B] (mean over EOT draws for [S, B, K] logits)."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  lab = jnp.broadcast_to(labels, logits.shape[:-1])
  ce = -jnp.take_along_axis(logp, lab[..., None], axis=-1)[..., 0]
  return jnp.mean(ce, axis=0) if logits.ndim == 3 else ce


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """`Z_label - max_{k != label} Z_k`, [B] (or [S, B] per EOT draw); > 0: label wins."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  z_label = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
  z_other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
  return z_label - z_other


def mean_draws(v: jax.Array, logits: jax.Array) -> jax.Array:
  """Averages a per-example quantity over the EOT draws when `logits` is [S, B, K]."""
  return jnp.mean(v, axis=0) if logits.ndim == 3 else v


def is_success(logits: jax.Array, labels: jax.Array, target_labels: jax.Array | None) -> jax.Array:
  """[B] bool: misclassified (untargeted) or classified as the target (targeted)."""
  pred = predict(logits)
  return pred != labels if target_labels is None else pred == target_labels


def runner_up(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """[B] the most likely class other than `labels` (targets for untargeted L-BFGS / JSMA)."""
  logits = mean_logits(logits)
  return jnp.argmax(jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf,
                              logits), axis=-1)


def record(logits: jax.Array, images: jax.Array, adv: jax.Array, labels: jax.Array,
           target_labels: jax.Array | None) -> dict[str, jax.Array]:
  """The `info` dict of the result convention (see the module docstring)."""
  delta = adv - images
  return {"success": is_success(logits, labels, target_labels), "linf": budgets.linf(delta),
          "l2": budgets.l2(delta), "rmse": budgets.rmse(delta)}


def finish(f: Callable, images: jax.Array, adv: jax.Array, labels: jax.Array,
           target_labels: jax.Array | None, key: jax.Array
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clips to the [0, 1] box, classifies once more and builds the record."""
  adv = jnp.clip(adv, 0.0, 1.0)
  return adv, record(f(adv, key), images, adv, labels, target_labels)


def _is_concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def num_classes(apply_fn: ApplyFn, params: Any, images: jax.Array) -> int:
  """K, the number of classes `apply_fn` scores (from its output shape; nothing is computed)."""
  key = jax.random.key(0)
  out = jax.eval_shape(lambda x: bind(apply_fn, params)(x, key),
                       jax.ShapeDtypeStruct(images.shape, images.dtype))
  return int(out.shape[-1])


def validate(images: Any, labels: Any, *, target_labels: Any = None, eps: float | None = None,
             norm: str | None = None, allow_no_eps: bool = False,
             apply_fn: ApplyFn | None = None, params: Any = None) -> None:
  """Raises ValueError for inputs an attack cannot give a meaningful answer for.

  Checks: images [B, H, W, C] floating point with finite values in [0, 1]
  (values only when concrete, i.e. not under an outer jit); labels /
  target_labels integer [B], when concrete >= 0 and, if the model is given
  (`apply_fn`, `params`), < K for the K classes it scores; eps finite
  and >= 0 (None allowed for minimal-norm attacks); norm known.
  """
  if getattr(images, "ndim", None) != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {getattr(images, 'shape', None)}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
  k = None   # traced only when a concrete label must be checked against it
  for name, lab in (("labels", labels), ("target_labels", target_labels)):
    if lab is None and name == "target_labels":
      continue
    if getattr(lab, "shape", None) != images.shape[:1] or not jnp.issubdtype(lab.dtype, jnp.integer):
      raise ValueError(f"{name} must be integers of shape {images.shape[:1]}, got "
                       f"{getattr(lab, 'dtype', type(lab))}{getattr(lab, 'shape', '')}")
    if _is_concrete(lab) and lab.size:
      lo, hi = int(np.min(lab)), int(np.max(lab))
      if k is None and apply_fn is not None:
        k = num_classes(apply_fn, params, images)
      if lo < 0 or (k is not None and hi >= k):
        raise ValueError(f"{name} must lie in [0, {k or 'K'}) for a model of {k or 'K'} "
                         f"classes, got values in [{lo}, {hi}]")
  if norm is not None:
    budgets.check_norm(norm)
  budgets.check_eps(eps, allow_none=allow_no_eps)
  if _is_concrete(images):           # numpy: a constant under an outer jit stays concrete
    values = np.asarray(images)
    lo, hi = float(values.min()), float(values.max())
    if not (0.0 <= lo and hi <= 1.0):          # also false for NaN
      raise ValueError(f"images must be finite and lie in [0, 1], got values in "
                       f"[{lo:.4g}, {hi:.4g}]")


def check_positive_int(**kwargs: int) -> None:
  for name, v in kwargs.items():
    if int(v) != v or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {v}")


def binary_search_c(c: jax.Array, lower: jax.Array, upper: jax.Array, success: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One step of Carlini & Wagner's per-example search for the smallest working c.

  Success: `upper = min(upper, c)`; failure: `lower = max(lower, c)`; then c is
  the midpoint once an upper bound exists, else 10 c. Returns (c, lower, upper).
  """
  upper = jnp.where(success, jnp.minimum(upper, c), upper)
  lower = jnp.where(success, lower, jnp.maximum(lower, c))
  c = jnp.where(upper < 1e10, 0.5 * (lower + upper), 10.0 * c)
  return c, lower, upper


def within(delta: jax.Array, eps: float | None, norm: str) -> jax.Array:
  """[B] bool: the perturbation respects the budget (always True for eps None)."""
  if eps is None:
    return jnp.ones(delta.shape[:1], bool)
  return budgets.norm_of(delta, norm) <= eps * (1 + 1e-6)


def ascent_loss(f: Callable, labels: jax.Array, target_labels: jax.Array | None
                ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`(x, key) -> [B]` the loss gradient attacks ascend.

  Untargeted: cross-entropy of the true label; targeted: minus the
  cross-entropy of the target (Ch. 3.3 of the thesis).
  """
  if target_labels is None:
    return lambda x, key: cross_entropy(f(x, key), labels)
  return lambda x, key: -cross_entropy(f(x, key), target_labels)


def loss_grad(loss: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, key: jax.Array
              ) -> jax.Array:
  """Gradient of the summed per-example loss: each example's own gradient."""
  return jax.grad(lambda v: jnp.sum(loss(v, key)))(x)


# XLA's CPU backend runs the input-gradient convolutions of plain `lax` /
# `nn.Conv` layers inside a while-loop body about 6x slower than outside a loop
# (it canonicalises convolution kernels only at the top level; ResNet-20,
# batch 32, jax 0.10.2: 2.2 s vs 0.3 s per step). The zoo's convolution
# (`jaxcomp.models.common.conv_general_dilated`) avoids that, which leaves
# ~1.4x for its models (ResNet-20, batch 16, 10 steps: 0.67 s looped vs 0.47 s
# unrolled). Short step loops are therefore unrolled on CPU; on GPU / TPU, and
# for long loops, they stay loops.
MAX_CPU_UNROLL = 32


def fori_loop(num_steps: int, body: Callable[[int, Any], Any], init: Any) -> Any:
  """`jax.lax.fori_loop(0, num_steps, body, init)`, unrolled on CPU up to MAX_CPU_UNROLL steps."""
  unroll = jax.default_backend() == "cpu" and num_steps <= MAX_CPU_UNROLL
  return jax.lax.fori_loop(0, num_steps, body, init, unroll=bool(unroll))
