"""Selectors: which version of each image to classify (paper 003; SPEC Sec. 5).

Every selector maps a classifier's logits on V versions of B images,
`logits [V, B, K]` (version 0 the original), and the versions' sizes
`sizes [V, B]` (bytes, whole-file or payload) to the chosen version `[B]` int32.
All are jit-able pure functions.

Ranks follow `jax.lax.top_k`: classes sorted by decreasing logit, equal logits
in increasing class index; rank 0 is the top. A label is in the top k iff its
rank is < k, so the accuracies of `selection_report` and these selectors agree
on ties.

* `highest_rank_select` (HRS, label known): the version in which the true label
  ranks highest. Whatever the version chosen for each image, the label's rank
  there is >= its HRS rank, so HRS's top-k accuracy is the highest of any
  selector for every k (the paper's optimality; an exchange argument).
* `keep_top1` / `keep_top5` / `keep_both` (label-free): versions whose top-1
  class (resp. top-5 set of classes, order ignored; resp. both) equals the
  original's qualify; the original always does. They keep the original's
  top-1 (resp. top-5) accuracy exactly.

Ties: among the best (HRS) or qualifying (label-free) versions, the smallest
size wins, then the lowest index. The smaller-file tie-break is ours; the
abstract is silent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check(logits: jax.Array, sizes: jax.Array) -> None:
  if logits.ndim != 3 or logits.shape[0] == 0:
    raise ValueError(f"logits must be [V, B, K] with V >= 1, got shape {logits.shape}")
  if sizes.shape != logits.shape[:2]:
    raise ValueError(f"sizes must be [V, B] = {logits.shape[:2]}, got shape {sizes.shape}")


def label_ranks(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The rank of the true label in each version's output.

  Args:
    logits: float [..., B, K].
    labels: int [B] in [0, K).

  Returns:
    int32 [..., B]: the number of classes ranked above the label (higher logit,
    or equal logit and lower index); 0 = top-1.
  """
  if labels.ndim != 1 or logits.ndim < 2 or logits.shape[-2] != labels.shape[0]:
    raise ValueError(f"labels must be [B] matching logits [..., B, K], got labels "
                     f"{labels.shape} and logits {logits.shape}")
  labels = labels.astype(jnp.int32)
  own = jnp.take_along_axis(logits, jnp.broadcast_to(labels[:, None], logits.shape[:-1] + (1,)),
                            axis=-1)
  lower = jnp.arange(logits.shape[-1]) < labels[:, None]                   # [B, K]
  above = (logits > own) | ((logits == own) & lower)
  return jnp.sum(above, axis=-1, dtype=jnp.int32)


def smallest_qualifying(qualifies: jax.Array, sizes: jax.Array) -> jax.Array:
  """Per image, the smallest qualifying version (lowest index among equal sizes).

  Args:
    qualifies: bool [V, B]; at least one True per column.
    sizes: [V, B] numbers (bytes).

  Returns:
    int32 [B], indices into V.
  """
  big = (jnp.finfo(sizes.dtype).max if jnp.issubdtype(sizes.dtype, jnp.floating)
         else jnp.iinfo(sizes.dtype).max)
  masked = jnp.where(qualifies, sizes, big)
  best = qualifies & (masked == jnp.min(masked, axis=0))
  return jnp.argmax(best, axis=0).astype(jnp.int32)                      # first True


def highest_rank_select(logits: jax.Array, labels: jax.Array, sizes: jax.Array) -> jax.Array:
  """HRS: the version in which the true label ranks highest (paper 003).

  Args:
    logits: float [V, B, K].
    labels: int [B] in [0, K).
    sizes: [V, B] bytes; break ties between equally ranked versions.

  Returns:
    int32 [B], the selected version of each image.
  """
  logits, labels, sizes = jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(sizes)
  _check(logits, sizes)
  ranks = label_ranks(logits, labels)
  return smallest_qualifying(ranks == jnp.min(ranks, axis=0), sizes)


def _same_top_k(logits: jax.Array, k: int) -> jax.Array:
  """bool [V, B]: version's top-k class set equals version 0's (order ignored)."""
  if not 1 <= k <= logits.shape[-1]:
    raise ValueError(f"top-{k} needs at least {k} classes, got {logits.shape[-1]}")
  top = jnp.sort(jax.lax.top_k(logits, k)[1], axis=-1)                   # [V, B, k]
  return jnp.all(top == top[:1], axis=-1)


def keep_top_k_select(logits: jax.Array, sizes: jax.Array, *, ks: tuple[int, ...]) -> jax.Array:
  """The smallest version whose top-k set equals the original's for every k in `ks`.

  Args:
    logits: float [V, B, K]; version 0 is the original.
    sizes: [V, B] bytes.
    ks: the k's that must all agree (1 <= k <= K).

  Returns:
    int32 [B], the selected version of each image.
  """
  logits, sizes = jnp.asarray(logits), jnp.asarray(sizes)
  _check(logits, sizes)
  if not ks:
    raise ValueError("ks must name at least one k")
  qualifies = jnp.ones(sizes.shape, bool)
  for k in ks:
    qualifies &= _same_top_k(logits, k)
  return smallest_qualifying(qualifies, sizes)


def keep_top1(logits: jax.Array, sizes: jax.Array) -> jax.Array:
  """Label-free: the smallest version with the original's top-1 class. int32 [B]."""
  return keep_top_k_select(logits, sizes, ks=(1,))


def keep_top5(logits: jax.Array, sizes: jax.Array) -> jax.Array:
  """Label-free: the smallest version with the original's top-5 set (order ignored). int32 [B]."""
  return keep_top_k_select(logits, sizes, ks=(5,))


def keep_both(logits: jax.Array, sizes: jax.Array) -> jax.Array:
  """Label-free: the smallest version keeping both the top-1 class and the top-5 set. int32 [B]."""
  return keep_top_k_select(logits, sizes, ks=(1, 5))
