"""The 11-input network of paper 003 (SPEC Sec. 5): one trunk, V versions, fused features.

A trained classifier's trunk is applied, with shared weights, to the original
and its JPEG versions (V = 11 in the paper: the original and QF 100, 90, ...,
10; `jaxcomp.selection.jpeg_versions` makes them); the V `pre_logits` vectors
are fused and a new dense head classifies. The paper (abstract only) trains the
network "partially": here the trunk's parameters all sit under "trunk/", so an
optimizer group matching `^trunk/` freezes them, and `load_trunk` copies a
trained classifier's variables in. How the paper fuses is not public; ours:

* `fusion="weighted"`: `sum_v softmax(w)_v f_v` with one learned logit `w_v`
  per version (initialised to 0: the plain mean). [B, D] -> head.
* `fusion="concat"`: `[f_1, ..., f_V]`, [B, V * D] -> head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models import common

FUSIONS = ("weighted", "concat")


class MultiVersionNet(nn.Module):
  """`head(fuse(trunk(x[:, 0]), ..., trunk(x[:, V-1])))`.

  Attributes:
    trunk: a classifier returning `(logits, {"features", "pre_logits", ...})`:
      a zoo model (`jaxcomp.models.MODELS`, normalised input) or an
      `ImageClassifier` ([0, 1] input). Its own logits are not used.
    num_classes: K, the width of the new head.
    fusion: "weighted" or "concat" (module docstring).
    train_trunk: when False (partial training), the trunk always runs in
      inference mode, so its BatchNorm keeps the trained running statistics
      even in a train step, and its outputs are `stop_gradient`ed (its
      parameters' gradients are zero, and the backward pass skips it); when
      True it follows `train`. Freeze its parameters with an optimizer group
      too (`^trunk/`), or weight decay would still move them.
    dtype: compute dtype of the head (parameters stay float32).
  """
  trunk: nn.Module
  num_classes: int
  fusion: str = "weighted"
  train_trunk: bool = False
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, common.Aux]:
    """Classifies V versions of each image together.

    Args:
      x: float [B, V, H, W, C], version axis second (what the trunk expects
        per image: normalised for a zoo model, [0, 1] for `ImageClassifier`).
      train: training mode (the trunk's too only if `train_trunk`).

    Returns:
      logits [B, K] float32 and aux: "features" [B, V, h, w, c] (the trunk's
      per version), "pre_logits" (the fused vector the head reads: [B, D] or
      [B, V * D]) and, for "weighted", "version_weights" [V] (sum 1).
    """
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
    if x.ndim != 5:
      raise ValueError(f"expected versions [B, V, H, W, C], got shape {x.shape}")
    b, v = x.shape[:2]
    _, aux = self.trunk(x.reshape(b * v, *x.shape[2:]), train=train and self.train_trunk)
    if not self.train_trunk:     # no gradient flows into a fixed trunk: no backward pass through it
      aux = jax.lax.stop_gradient(aux)
    feats = aux["pre_logits"].reshape(b, v, -1)
    out = {"features": aux["features"].reshape(b, v, *aux["features"].shape[1:])}
    if self.fusion == "weighted":
      w = jax.nn.softmax(self.param("version_logits", nn.initializers.zeros, (v,), jnp.float32))
      fused = jnp.einsum("v,bvd->bd", w.astype(feats.dtype), feats)
      out["version_weights"] = w
    else:
      fused = feats.reshape(b, -1)
    logits, head_aux = common.classify(out["features"], fused, num_classes=self.num_classes,
                                       dtype=self.dtype)
    return logits, {**out, "pre_logits": head_aux["pre_logits"]}


def load_trunk(variables: dict[str, Any], classifier_variables: dict[str, Any]
               ) -> dict[str, Any]:
  """`variables` of a `MultiVersionNet` with its trunk replaced by a trained classifier's.

  Args:
    variables: the network's variables (`init` output): {"params": {"trunk":
      ..., "head": ..., ...}, "batch_stats": {"trunk": ...}?}.
    classifier_variables: the trained classifier's variables, of the same
      module as the trunk: {"params": ..., "batch_stats": ...?}.

  Returns:
    A new variables dict; every collection's "trunk" entry is the classifier's.
    Raises ValueError unless the classifier's collections, tree structure and
    leaf shapes equal the trunk's.
  """
  trunk = {k: c["trunk"] for k, c in variables.items() if "trunk" in c}
  if set(trunk) != set(classifier_variables):
    raise ValueError(f"the trunk has collections {sorted(trunk)}, the classifier "
                     f"{sorted(classifier_variables)}")
  shapes = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)
  for k in trunk:
    if (jax.tree.structure(trunk[k]) != jax.tree.structure(classifier_variables[k])
        or shapes(trunk[k]) != shapes(classifier_variables[k])):
      raise ValueError(f"the classifier's {k!r} do not match the trunk's (another model or size?)")
  return {k: {**c, "trunk": classifier_variables[k]} if k in trunk else c
          for k, c in variables.items()}
