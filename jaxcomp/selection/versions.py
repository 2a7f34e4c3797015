"""The original image and its JPEG versions, their sizes, and a classifier's logits on all.

Host-side (Pillow, numpy) except `classify_versions`, which runs a jitted model.
Paper 003 (Yang, Amer, Jiang, "Compression helps deep learning in image
classification"; SPEC Sec. 5) considers, for each image, the original and its
JPEG versions at QF 100, 90, ..., 10. Ours are encoded and decoded by Pillow
(libjpeg-turbo) with the standard IJG tables, standard Huffman tables and 4:2:0
chroma subsampling for RGB; grey images have a single component, hence no chroma.

Sizes are counted twice (SPEC Sec. 1, compressed-training thesis Sec. 3.2): the
whole file, and the payload only -- for JPEG the entropy-coded scan bytes
(`jaxcomp.codecs.jpeg_files.entropy_coded_bytes`), for PNG the zlib stream in
the IDAT chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxcomp.codecs.jpeg_files import entropy_coded_bytes, jpeg_roundtrip
from jaxcomp.ops.jpeg_tables import check_quality

QUALITIES = (100, 90, 80, 70, 60, 50, 40, 30, 20, 10)
PNG_COMPRESS_LEVEL = 9  # zlib level of the PNG that stands in for a missing original file
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class Versions:
  """An image batch and its JPEG versions.

  Attributes:
    images: uint8 [V, B, H, W, C]; index 0 is the original, index i >= 1 the
      Pillow decode of its JPEG at `qualities[i - 1]`.
    file_bytes: int64 [V, B], whole-file sizes.
    payload_bytes: int64 [V, B], entropy-coded (JPEG) or IDAT (PNG) bytes.
    qualities: the JPEG qualities of versions 1..V-1.
    original_source: where row 0 of the sizes comes from: "given" (the caller's
      `original_sizes`) or "png" (a Pillow PNG at zlib level `PNG_COMPRESS_LEVEL`).
    subsampling: "4:2:0" for RGB, "none" for grey.
  """
  images: np.ndarray
  file_bytes: np.ndarray
  payload_bytes: np.ndarray
  qualities: tuple[int, ...]
  original_source: str
  subsampling: str


def check_qualities(qualities: Sequence[int]) -> tuple[int, ...]:
  """`qualities` as a tuple of ints; ValueError unless non-empty, in 1..100, strictly decreasing."""
  qs = tuple(check_quality(q) for q in qualities)
  if not qs:
    raise ValueError("qualities must name at least one JPEG quality")
  if any(a <= b for a, b in zip(qs, qs[1:])):
    raise ValueError(f"qualities must be strictly decreasing, got {qs}")
  return qs


def _png_idat_bytes(data: bytes) -> int:
  """The summed data lengths of a PNG file's IDAT chunks (its zlib stream)."""
  pos, total = len(_PNG_SIGNATURE), 0
  while pos + 8 <= len(data):
    length = int.from_bytes(data[pos:pos + 4], "big")
    kind = data[pos + 4:pos + 8]
    if kind == b"IDAT":
      total += length
    if kind == b"IEND":
      return total
    pos += 12 + length                       # length, type, data, CRC
  raise ValueError("corrupt PNG: no IEND chunk")


def file_sizes(data: bytes) -> tuple[int, int]:
  """(whole-file bytes, payload bytes) of a JPEG or PNG file.

  Payload: the entropy-coded scan bytes of a JPEG (`entropy_coded_bytes`), the
  IDAT chunk data (zlib stream) of a PNG. Other formats raise ValueError.
  """
  if data[:2] == b"\xff\xd8":
    return len(data), entropy_coded_bytes(data)
  if data[:8] == _PNG_SIGNATURE:
    return len(data), _png_idat_bytes(data)
  raise ValueError("file_sizes knows JPEG and PNG files only (no SOI marker or PNG signature)")


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
      buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
  return buf.getvalue()


def jpeg_versions(images: np.ndarray, qualities: Sequence[int] = QUALITIES, *,
                  original_sizes: tuple[Sequence[int], Sequence[int]] | None = None
                  ) -> Versions:
  """The original batch followed by its Pillow JPEG versions, with their sizes.

  Args:
    images: uint8 [B, H, W, C], C = 3 (RGB, encoded 4:2:0) or 1 (grey).
    qualities: IJG qualities, integers in 1..100, strictly decreasing (the
      paper's order, 100 down to 10); version i is quality `qualities[i - 1]`.
    original_sizes: (whole-file bytes [B], payload bytes [B]) of the files the
      originals were read from (`file_sizes` gives both for JPEG and PNG files).
      When None, the originals are sized as PNG files (zlib level 9), and
      `original_source` says "png".

  Returns:
    `Versions` with V = 1 + len(qualities): images uint8 [V, B, H, W, C],
    file_bytes and payload_bytes int64 [V, B].
  """
  images = np.asarray(images)
  if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3)
      or images.shape[0] == 0):
    raise ValueError(f"images must be uint8 [B, H, W, C] with B >= 1 and C = 1 or 3, got "
                     f"{images.dtype} {images.shape}")
  qs = check_qualities(qualities)
  b = images.shape[0]
  if original_sizes is None:
    source = "png"
    orig = np.array([file_sizes(_png(im)) for im in images], np.int64).reshape(b, 2).T
  else:
    source = "given"
    orig = np.asarray(original_sizes)
    if orig.shape != (2, b) or not np.issubdtype(orig.dtype, np.integer):
      raise ValueError(f"original_sizes must be integer (file [B], payload [B]) with B = {b}, "
                       f"got {orig.dtype} {orig.shape}")
    if np.any(orig <= 0) or np.any(orig[1] > orig[0]):
      raise ValueError("original_sizes must be positive, payload at most the whole file")
  decoded, files, payloads = [images], [orig[0]], [orig[1]]
  for q in qs:
    d, f, p = jpeg_roundtrip(images, quality=q, subsampling="4:2:0")
    decoded.append(d)
    files.append(f)
    payloads.append(p)
  return Versions(images=np.stack(decoded), file_bytes=np.stack(files).astype(np.int64),
                  payload_bytes=np.stack(payloads).astype(np.int64), qualities=qs,
                  original_source=source,
                  subsampling="4:2:0" if images.shape[-1] == 3 else "none")


@functools.partial(jax.jit, static_argnums=0)
def _logits_of(apply_fn: Callable[..., Any], variables: Any, chunk: jax.Array) -> jax.Array:
  """float32 logits [N, K] of a chunk [N, H, W, C] (uint8 scaled to [0, 1]).

  Jitted once per `apply_fn` (hashable, static) and chunk shape, so that calls
  on successive batches of a dataset reuse the compiled classifier."""
  x = chunk.astype(jnp.float32) / 255.0 if chunk.dtype == jnp.uint8 else chunk
  out = apply_fn(variables, x)
  return (out[0] if isinstance(out, tuple) else out).astype(jnp.float32)


def classify_versions(apply_fn: Callable[..., Any], variables: Any, versions: np.ndarray, *,
                      batch_size: int) -> np.ndarray:
  """A classifier's logits on every version of every image.

  The V x B images are flattened to one axis and classified in chunks of
  `batch_size` by one jitted call (the last chunk padded, so it compiles once,
  and once for all calls with the same `apply_fn` and chunk shape);
  the versions stay on the host and at most two chunks are on the device at once.

  Args:
    apply_fn: `apply_fn(variables, images) -> logits [N, K]` or `(logits, aux)`
      (a zoo model's or `ImageClassifier`'s `apply`, whose `train` defaults to False);
      hashable (a bound method or a plain function): the jit cache's key.
    variables: the model's variables.
    versions: [V, B, H, W, C]; uint8 is scaled to float32 in [0, 1] (the
      `ImageClassifier` input); floats are passed unchanged.
    batch_size: images per call, >= 1.

  Returns:
    float32 logits [V, B, K] (numpy).
  """
  versions = np.asarray(versions)
  if versions.ndim != 5 or versions.shape[0] * versions.shape[1] == 0:
    raise ValueError(f"versions must be [V, B, H, W, C] with V, B >= 1, got shape "
                     f"{versions.shape}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  v, b = versions.shape[:2]
  flat = versions.reshape(v * b, *versions.shape[2:])
  size = min(batch_size, v * b)
  chunks = []
  for start in range(0, v * b, size):
    chunk = flat[start:start + size]
    n = len(chunk)
    if n < size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
    chunks.append(_logits_of(apply_fn, variables, chunk)[:n])
    if len(chunks) > 1:           # at most two chunks in flight: overlap, bounded memory
      chunks[-2] = np.asarray(chunks[-2])
  return np.concatenate([np.asarray(c) for c in chunks]).reshape(v, b, -1)
