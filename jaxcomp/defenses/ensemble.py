"""Majority vote over random draws of a randomised defense (Ens-10, Table 4.1)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Defense = Callable[[jax.Array, jax.Array], jax.Array]


def majority_vote(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                  images: jax.Array, key: jax.Array, *, defense: Defense,
                  num_draws: int = 10) -> jax.Array:
  """The most frequent prediction over `num_draws` draws of `defense`.

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]`.
    params: the classifier's parameters.
    images: [B, H, W, C] images in [0, 1].
    key: PRNG key; draw i uses `split(key, num_draws)[i]`.
    defense: `(images, key) -> images` (e.g. `pd_rcam_dwt` with its settings bound).
    num_draws: N (10 for Ens-10). Draws run one after another (`lax.map`),
      so memory stays that of one forward pass.

  Returns:
    [B] int32 voted labels; ties go to the smallest class index.
  """
  if int(num_draws) != num_draws or num_draws < 1:
    raise ValueError(f"num_draws must be a positive integer, got {num_draws}")

  def one(k):
    logits = apply_fn(params, defense(images, k))
    return jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=jnp.int32)

  votes = jnp.sum(jax.lax.map(one, jax.random.split(key, num_draws)), axis=0)
  return jnp.argmax(votes, axis=-1).astype(jnp.int32)
