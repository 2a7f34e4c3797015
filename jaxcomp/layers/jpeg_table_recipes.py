"""Recipes for JPEG-DL's tables: initialisation from data, export as integer JPEG tables.

`sensitivity_tables` (the CIFAR / fine-grained recipe: from the gradients of a
pretrained classifier) and `lsq_tables` (ImageNet: LSQ-style from the
coefficients' magnitudes) compute [8, 8] steps for `jpeg_layer.set_tables`;
`export_tables` turns learned steps into the integer tables a baseline JPEG file
carries (`jaxcomp.codecs.jpeg_files.encode_jpeg(..., qtables=..., subsampling="4:4:4")`).
(../shared/JPEG_DL.md, "Initialisation".)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp.layers.jpeg_layer import Q_MAX
from jaxcomp.ops.jpeg_transform import layer_coefficients, layer_reconstruct


def export_tables(params: dict, round_index: int = 0
                  ) -> tuple[np.ndarray, np.ndarray | None]:
  """Integer JPEG tables of one round: `clip(round(q), 1, 255)`, int32 [8, 8].

  Returns:
    (luma, chroma); chroma is None for a grey layer. A baseline JPEG file carries one
    table per component, so a multi-round layer exports one round at a time.
  """
  p = params[f"round_{round_index}"]
  tables = [np.clip(np.round(np.asarray(p[n], np.float64)), 1, 255).astype(np.int32)
            if n in p else None for n in ("luma_q", "chroma_q")]
  return tables[0], tables[1]


def _normalise_sensitivity(s: np.ndarray, q_max: float) -> tuple[np.ndarray, np.ndarray | None]:
  s = np.maximum(s, np.finfo(np.float64).tiny)
  luma = 1.0 / s[0]
  chroma = 2.0 / (s[1] + s[2]) if s.shape[0] == 3 else None
  factor = luma.max() / q_max
  out = [np.minimum(t / factor, Q_MAX).astype(np.float32) if t is not None else None
         for t in (luma, chroma)]
  return out[0], out[1]


def sensitivity_tables(logits_fn: Callable[[jax.Array], jax.Array],
                       batches: Iterable[tuple[Any, Any]], *, q_max: float = 10.0
                       ) -> tuple[np.ndarray, np.ndarray | None]:
  """Sensitivity initialisation of the tables from a pretrained classifier.

  `S[c, i] = sum over blocks of (d CE / d z_{c,i})**2 / number of images`, with CE the
  batch-mean cross-entropy and z the DCT coefficients of the YCbCr image (the constant
  level shift and offsets do not change the gradient); then `Y = 1 / S_Y`,
  `CbCr = 2 / (S_Cb + S_Cr)`, both divided by `max(Y) / q_max` (JPEG_DL.md,
  "Initialisation"; the authors' `get_sens` and `JPEG_layer.construct`). Entries
  are capped at 255, the forward pass's clamp.

  Args:
    logits_fn: [B, H, W, C] images in [0, 1] -> [B, K] logits: the classifier trained
      without the layer, in eval mode, with its input normalisation.
    batches: iterable of (images [B, H, W, C] in [0, 1], integer labels [B]), e.g.
      10,000 augmented training images.
    q_max: the largest luma step after normalisation (default 10; scripts 10 or 15).

  Returns:
    (luma, chroma) float32 [8, 8]; chroma is None for grey images.
  """
  @jax.jit
  def batch_sensitivity(images, labels):
    images = jnp.asarray(images, jnp.float32)
    z = layer_coefficients(images)

    def loss(z):
      logits = logits_fn(layer_reconstruct(z, images.shape[1], images.shape[2]))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return jnp.sum(jax.grad(loss)(z) ** 2, axis=(1, 2, 3))      # [C, 8, 8]

  total, count = 0.0, 0
  for images, labels in batches:
    total = total + np.asarray(batch_sensitivity(images, jnp.asarray(labels)), np.float64)
    count += len(labels)
  if count == 0:
    raise ValueError("sensitivity_tables needs at least one batch")
  return _normalise_sensitivity(total / count, q_max)


def lsq_tables(images: jax.Array, *, bits: int = 8) -> tuple[np.ndarray, np.ndarray | None]:
  """LSQ-style initial steps `q = 2 mean|z| / sqrt(2**(b-1))` per table entry.

  The mean runs over all blocks of the batch (and over Cb and Cr for the chroma
  table), as the authors' ImageNet initialisation (JPEG_DL.md; LSQ, Esser et al. 2020).

  Args:
    images: [B, H, W, C] float in [0, 1].
    bits: b (ImageNet recipe: 11).

  Returns:
    (luma, chroma) float32 [8, 8]; chroma is None for grey images.
  """
  z = jnp.abs(layer_coefficients(jnp.asarray(images, jnp.float32)))
  scale = 2.0 / np.sqrt(2.0 ** (bits - 1))
  luma = np.asarray(scale * z[0].mean(axis=(0, 1, 2)), np.float32)
  chroma = (np.asarray(scale * z[1:].mean(axis=(0, 1, 2, 3)), np.float32)
            if z.shape[0] == 3 else None)
  return luma, chroma
