"""Batched coding of many images with a learned codec: real `.jcx` streams, counted bits.

`compression.compress` codes one image; building a compressed dataset codes
60,000. Here the transforms run once per batch of `batch_size` images (one
jitted analysis, one jitted synthesis, each batch padded to the same shape so
that nothing recompiles), and only the entropy coding runs per image, with the
same integer tables (`entropy.coder`) and the same container (`bitstream`) as
`compress`, so every stream decodes with `compression.decompress`.

Table indexes: those of the first coded latent (every codec's per-channel
tables) depend on the shape only and are computed once; those of a later
latent (the hyperprior's y, whose tables come from `h_s(z_hat)`) are computed
per image with *the jitted function the decoder calls* (`_table_indexes` on a
batch of one), so encoder and decoder pick the same tables bit for bit.

Bits (compressed-training thesis, Sec. 3.2): `file_bits` is the whole stream
(header + streams), `payload_bits` the entropy-coded streams only (z and y),
both measured from the bytes.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from jaxcomp.codecs import bitstream
from jaxcomp.codecs.compression import (CodingTables, _analyze, _check_codec, _check_image,
                                        _header, _synthesize, _table_indexes, coding_tables,
                                        pad_image)
from jaxcomp.entropy import coder

DEFAULT_BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True)
class CodedImages:
  """The result of coding `B` images.

  Attributes:
    images: uint8 [B, H, W, 3], the decoded reconstructions.
    streams: B `.jcx` byte strings (`compression.decompress` reads each).
    file_bits: int64 [B], 8 x the bytes of each whole stream.
    payload_bits: int64 [B], 8 x the bytes of its entropy-coded streams (no header).
  """
  images: np.ndarray
  streams: list[bytes]
  file_bits: np.ndarray
  payload_bits: np.ndarray


def _check_images(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f"expected a non-empty uint8 batch [B, H, W, 3], got shape {images.shape}")
  _check_image(images[0])
  return images


def _padded_batch(images: np.ndarray, multiple: int, batch_size: int) -> np.ndarray:
  """float32 [batch_size, H', W', 3]: each image padded as `compress` pads it, then
  zero images up to `batch_size` (their results are dropped)."""
  b, h, w, c = images.shape
  # One `pad_image` call pads the b images side by side (edge padding is per channel).
  x = pad_image(images.transpose(1, 2, 0, 3).reshape(h, w, b * c), multiple)[0]
  x = x.reshape(*x.shape[:2], b, c).transpose(2, 0, 1, 3)
  return np.concatenate([x, np.zeros((batch_size - b, *x.shape[1:]), x.dtype)])


def _code_symbols(model: nn.Module, params: dict, symbols: dict[str, np.ndarray],
                  first_index: np.ndarray, tables: CodingTables) -> list[dict[str, bytes]]:
  """Entropy-codes the symbols `{latent: [b, h, w, c]}` of b images, one stream per latent.

  `first_index`: the table indexes of the first coded latent, [1, h, w, c].
  """
  first, *later = model.coded_latents
  out = []
  for i in range(len(symbols[first])):
    streams = {first: coder.encode(symbols[first][i:i + 1], first_index, tables[first])}
    for k, name in enumerate(later):
      before = {n: symbols[n][i:i + 1] for n in model.coded_latents[:k + 1]}
      index = np.asarray(_table_indexes(model, params, name, before,
                                        (1, *symbols[name].shape[1:])))
      streams[name] = coder.encode(symbols[name][i:i + 1], index, tables[name])
    out.append(streams)
  return out


def code(model: nn.Module, params: dict, images: np.ndarray, *, name: str = "checkpoint",
         tables: CodingTables | None = None, batch_size: int = DEFAULT_BATCH_SIZE
         ) -> CodedImages:
  """Compresses and decodes a batch of images with real bitstreams.

  Args:
    model: a learned codec (`learned.build`, `pretrained.load`).
    params: its "params" collection.
    images: uint8 [B, H, W, 3], any B >= 1, equal-size RGB images.
    name: the model name written into each header (a shipped model's, or "checkpoint").
    tables: `coding_tables(model, params)`, to reuse across calls.
    batch_size: images per jitted analysis / synthesis (the last batch is
      padded to it, so one compilation serves every call of a shape).

  Returns:
    `CodedImages`: the reconstructions (what `decompress` of each stream gives,
    up to float differences between a batched and a single-image synthesis)
    and the bits of each stream.

  Raises:
    ValueError: not a learned codec, images not uint8 [B, H, W, 3], or batch_size < 1.
  """
  _check_codec(model)
  images = _check_images(images)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  tables = tables or coding_tables(model, params)
  n, h, w = images.shape[:3]
  header_bytes = bitstream.header_size(name)
  header = _header(model, tables, name, h, w)
  first = model.coded_latents[0]
  shapes = {m: s.shape for m, s in jax.eval_shape(
      _analyze, model, params, jax.ShapeDtypeStruct(
          (1, -(-h // model.downsampling) * model.downsampling,
           -(-w // model.downsampling) * model.downsampling, 3), np.float32)).items()}
  first_index = np.asarray(_table_indexes(model, params, first, {}, shapes[first]))
  decoded, streams = [], []
  starts = range(0, n, batch_size)
  pending = None                                   # the next batch's analysis, dispatched early
  for k, start in enumerate(starts):
    chunk = images[start:start + batch_size]
    if pending is None:
      pending = _analyze(model, params, _padded_batch(chunk, model.downsampling, batch_size))
    symbols = {m: s[:len(chunk)] for m, s in jax.device_get(pending).items()}
    reconstruction = _synthesize(model, params, pending["y"])
    if k + 1 < len(starts):                        # overlap the next analysis with coding
      nxt = images[starts[k + 1]:starts[k + 1] + batch_size]
      pending = _analyze(model, params, _padded_batch(nxt, model.downsampling, batch_size))
    for coded in _code_symbols(model, params, symbols, first_index, tables):
      streams.append(bitstream.pack(header, coded.get("z", b""), coded["y"]))
    decoded.append(np.asarray(reconstruction)[:len(chunk), :h, :w])
  file_bytes = np.array([len(s) for s in streams], np.int64)
  return CodedImages(np.concatenate(decoded), streams, 8 * file_bytes,
                     8 * (file_bytes - header_bytes))
