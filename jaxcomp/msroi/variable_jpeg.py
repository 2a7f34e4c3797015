"""Variable-quality (semantic) JPEG from a saliency map (thesis 001, Ch. 2, Eq. 2.7, Algorithm 1).

The map (float [H, W] in [0, 1], 1 = most salient) is pooled per 8x8 block and
quantized into k levels (`block_levels`); the image is JPEG-coded once per level
quality Q_0 < ... < Q_{k-1} (`levels`), each 8x8 block takes the decoded pixels of
its level's JPEG (`select_blocks`, `mosaic`), and the mosaic is coded once more by a
standard encoder at Q_f (`encode_variable_quality`): a plain .jpg any decoder reads.
`match_size` searches Q_f so that the file is within +-1 % of a target size (the
thesis's equal-size comparison with standard JPEG, Sec. 2.5).

`block_levels` and `select_blocks` are pure `jax.numpy` (jit-able, batch-polymorphic)
and serve both this Pillow path and jit-compiled defenses built on jaxcomp's own JPEG.

What a block is under 4:2:0 (the default, as in libjpeg and the thesis's files): a
block is 8x8 *pixels* of the RGB image. Luma is coded per 8x8 block, so a block's
luma is exactly its level's; chroma is coded on 16x16-pixel MCUs (one 8x8 Cb and Cr
block per 2x2 luma blocks) and upsampled with libjpeg's "fancy" interpolation, so the
colour copied from a level's JPEG also reflects the neighbouring pixels of its MCU,
and the final encode subsamples chroma again over 2x2 pixels, across blocks of
different levels inside one MCU. With `subsampling="4:4:4"` every plane is per 8x8 block.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.codecs.jpeg_files import decode_jpeg, encode_jpeg, to_uint8
from jaxcomp.ops.jpeg_tables import check_quality

BLOCK = 8
FORMS = ("experiments", "printed")
POOLINGS = ("mean", "max")


def levels(q_low: int = 30, q_high: int = 70, k: int = 5, *,
           form: str = "experiments") -> tuple[int, ...]:
  """The k JPEG qualities of the saliency levels, lowest saliency first (Eq. 2.7).

  Args:
    q_low, q_high: Q_l <= Q_h, integers in 1..100.
    k: number of levels, >= 1 (k = 1: Q_l only).
    form: "experiments" (Sec. 2.5, "increments of ten from 30 to 70"):
      `Q_n = Q_l + n (Q_h - Q_l) / (k - 1)`, n = 0..k-1, both ends included;
      "printed" (Eq. 2.7 as printed): `Q_n = Q_l + n (Q_h - Q_l) / k`, which stops
      one step short of Q_h (30, 38, 46, 54, 62). Non-integers are rounded half up.

  Returns:
    k ints, non-decreasing: (30, 40, 50, 60, 70) for the defaults.
  """
  check_quality(q_low)
  check_quality(q_high)
  if q_low > q_high:
    raise ValueError(f"inverted quality range: q_low={q_low} > q_high={q_high}")
  if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
    raise ValueError(f"the number of levels k must be an integer >= 1, got {k!r}")
  if form not in FORMS:
    raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
  steps = (k - 1 if form == "experiments" else k) or 1
  return tuple(math.floor(q_low + n * (q_high - q_low) / steps + 0.5) for n in range(k))


def block_levels(saliency_map: jax.Array, qualities: Sequence[int], *,
                 pooling: str = "mean") -> jax.Array:
  """Level index of every 8x8 block (Algorithm 1, line 3; Sec. 2.4).

  Each block's saliency is pooled over the pixels it has (partial blocks on the
  right and bottom edges of sizes that are not multiples of 8 pool over fewer),
  then quantized as Sec. 2.4 defines the levels: level 0 holds [0, 1/k], level n
  (n/k, (n+1)/k], i.e. `n = clip(ceil(k s) - 1, 0, k - 1)`: the nearest of the
  quantized levels (n + 1/2)/k, Algorithm 1's "nearest quantized level". Values
  outside [0, 1] fall into the end levels.

  Args:
    saliency_map: [..., H, W] float in [0, 1].
    qualities: the levels' qualities (`levels(...)`); only their number k is used.
    pooling: "mean" (default: the block's mean saliency; the thesis does not say)
      or "max" (a block touching a salient object gets its level).

  Returns:
    [..., ceil(H/8), ceil(W/8)] int32 in 0..k-1.
  """
  m = jnp.asarray(saliency_map)
  if m.ndim < 2 or not jnp.issubdtype(m.dtype, jnp.floating) or 0 in m.shape[-2:]:
    raise ValueError(f"saliency_map must be a float [..., H, W] array, got {m.dtype} {m.shape}")
  k = len(qualities)
  if k < 1:
    raise ValueError("qualities must hold at least one level")
  if pooling not in POOLINGS:
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
  h, w = m.shape[-2:]
  hb, wb = -(-h // BLOCK), -(-w // BLOCK)
  pad = [(0, 0)] * (m.ndim - 2) + [(0, hb * BLOCK - h), (0, wb * BLOCK - w)]
  shape = m.shape[:-2] + (hb, BLOCK, wb, BLOCK)
  if pooling == "mean":
    counts = np.pad(np.ones((h, w)), pad[-2:]).reshape(hb, BLOCK, wb, BLOCK).sum(axis=(1, 3))
    pooled = jnp.pad(m, pad).reshape(shape).sum(axis=(-3, -1)) / counts.astype(m.dtype)
  else:
    pooled = jnp.pad(m, pad, constant_values=-jnp.inf).reshape(shape).max(axis=(-3, -1))
  return jnp.clip(jnp.ceil(pooled * k) - 1, 0, k - 1).astype(jnp.int32)


def select_blocks(decoded_stack: jax.Array, block_index: jax.Array) -> jax.Array:
  """Each 8x8 block from the image of its level (Algorithm 1, line 4).

  Args:
    decoded_stack: [k, ..., H, W, C], the image decoded at each level's quality, any dtype.
    block_index: [..., ceil(H/8), ceil(W/8)] integer level per block (`block_levels`);
      indices outside 0..k-1 are clipped.

  Returns:
    [..., H, W, C], same dtype as `decoded_stack`: pixel (i, j) from level
    `block_index[..., i // 8, j // 8]`.
  """
  stack, idx = jnp.asarray(decoded_stack), jnp.asarray(block_index)
  if stack.ndim < 4 or idx.ndim != stack.ndim - 2 or not jnp.issubdtype(idx.dtype, jnp.integer):
    raise ValueError(f"expected decoded_stack [k, ..., H, W, C] and integer block_index "
                     f"[..., Hb, Wb], got {stack.shape} and {idx.dtype} {idx.shape}")
  h, w = stack.shape[-3:-1]
  expected = stack.shape[1:-3] + (-(-h // BLOCK), -(-w // BLOCK))
  if idx.shape != expected:
    raise ValueError(f"block_index must be {expected} for images of {h}x{w}, got {idx.shape}")
  pixels = jnp.repeat(jnp.repeat(idx, BLOCK, axis=-2), BLOCK, axis=-1)[..., :h, :w]
  return jnp.take_along_axis(stack, pixels[None, ..., None], axis=0, mode="clip")[0]


def _check_pair(image: np.ndarray, saliency_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [H, W, 3] image and float32 [H, W] map in [0, 1] of the same size, or ValueError."""
  image = to_uint8(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be RGB [H, W, 3], got shape {image.shape}")
  m = np.asarray(saliency_map)
  if m.shape != image.shape[:2] or not np.issubdtype(m.dtype, np.floating):
    raise ValueError(f"saliency_map must be float [H, W] = {image.shape[:2]}, "
                     f"got {m.dtype} {m.shape}")
  if not np.all(np.isfinite(m)) or m.min() < 0.0 or m.max() > 1.0:
    raise ValueError(f"saliency_map must lie in [0, 1], got [{np.nanmin(m)}, {np.nanmax(m)}]")
  return image, m.astype(np.float32)


def mosaic(image: np.ndarray, block_index: np.ndarray, qualities: Sequence[int], *,
           subsampling: str = "4:2:0") -> np.ndarray:
  """The mosaic I' of Algorithm 1 (lines 2-5), with Pillow JPEGs.

  Args:
    image: [H, W, 3] RGB, uint8 or float in [0, 1].
    block_index: [ceil(H/8), ceil(W/8)] integer levels in 0..k-1 (`block_levels`).
    qualities: the k level qualities (`levels`).
    subsampling: "4:2:0" or "4:4:4" for the level JPEGs (module docstring).

  Returns:
    [H, W, 3] uint8: every block holds the pixels of Pillow's decode of the whole
    image encoded at its level's quality.
  """
  image = to_uint8(image)
  idx = np.asarray(block_index)
  if idx.size and (idx.min() < 0 or idx.max() >= len(qualities)):
    raise ValueError(f"block levels must lie in 0..{len(qualities) - 1}, "
                     f"got [{idx.min()}, {idx.max()}]")
  decoded = np.stack([decode_jpeg(encode_jpeg(image, quality=q, subsampling=subsampling))
                      for q in qualities])
  return np.asarray(select_blocks(decoded, idx))


def encode_variable_quality(image: np.ndarray, saliency_map: np.ndarray, *, q_final: int,
                            qualities: Sequence[int] | None = None, pooling: str = "mean",
                            subsampling: str = "4:2:0") -> bytes:
  """Algorithm 1: the mosaic of level JPEGs, encoded once more at `q_final`.

  Args:
    image: [H, W, 3] RGB, uint8 or float in [0, 1].
    saliency_map: [H, W] float in [0, 1].
    q_final: Q_f, 1..100.
    qualities: the level qualities; None: `levels()` (30, 40, 50, 60, 70).
    pooling: block pooling of the map ("mean" or "max").
    subsampling: "4:2:0" or "4:4:4", for the level JPEGs and the final file.

  Returns:
    A baseline JFIF file's bytes.
  """
  image, m = _check_pair(image, saliency_map)
  qualities = levels() if qualities is None else qualities
  idx = block_levels(m, qualities, pooling=pooling)
  return encode_jpeg(mosaic(image, idx, qualities, subsampling=subsampling),
                     quality=check_quality(q_final), subsampling=subsampling)


def find_quality(size_of: Callable[[int], int], target_bytes: int, *,
                 tolerance: float = 0.01) -> int:
  """A quality q in 1..100 with `|size_of(q) - target| <= tolerance * target`.

  Bisects for the largest q whose size is <= target (sizes mostly grow with q)
  and keeps the best of q-3..q+4 that is within the tolerance; file size is not
  strictly monotone in q, so when none of those is, it scans all 100. Among the
  candidates seen it returns the one closest to the target (the higher q on ties).

  Args:
    size_of: quality -> file size in bytes (called at most once per quality).
    target_bytes: the size to match, > 0.
    tolerance: relative tolerance, >= 0 (0.01: the thesis's +-1 %).

  Returns:
    The quality.

  Raises:
    ValueError: no quality reaches the target within the tolerance; the message
      names the closest size reached and its quality.
  """
  if target_bytes <= 0 or tolerance < 0:
    raise ValueError(f"need target_bytes > 0 and tolerance >= 0, got {target_bytes}, {tolerance}")
  sizes: dict[int, int] = {}

  def size(q: int) -> int:
    if q not in sizes:
      sizes[q] = int(size_of(q))
    return sizes[q]

  def best(candidates) -> int | None:
    ok = [q for q in candidates if abs(size(q) - target_bytes) <= tolerance * target_bytes]
    return min(ok, key=lambda q: (abs(sizes[q] - target_bytes), -q)) if ok else None

  lo, hi = 1, 100
  while lo < hi:
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if size(mid) <= target_bytes else (lo, mid - 1)
  q = best(range(max(1, lo - 3), min(100, lo + 4) + 1))
  if q is None:
    q = best(range(1, 101))
  if q is None:
    closest = min(sizes, key=lambda q: (abs(sizes[q] - target_bytes), -q))
    raise ValueError(f"no final quality in 1..100 gives {target_bytes} bytes +-{tolerance:.1%}; "
                     f"the closest is {sizes[closest]} bytes at quality {closest}")
  return q


def match_size(image: np.ndarray, saliency_map: np.ndarray, target_bytes: int, *,
               tolerance: float = 0.01, qualities: Sequence[int] | None = None,
               pooling: str = "mean", subsampling: str = "4:2:0") -> tuple[bytes, int]:
  """Algorithm 1 with Q_f chosen so that the file is within +-tolerance of `target_bytes`.

  Args:
    image, saliency_map, qualities, pooling, subsampling: as `encode_variable_quality`.
    target_bytes: e.g. the size of a standard JPEG of the image at quality 50.
    tolerance: relative size tolerance (0.01: Sec. 2.5's +-1 %).

  Returns:
    (the file's bytes, Q_f).

  Raises:
    ValueError: bad input, or no Q_f in 1..100 reaches the size (`find_quality`).
  """
  image, m = _check_pair(image, saliency_map)
  qualities = levels() if qualities is None else qualities
  mixed = mosaic(image, block_levels(m, qualities, pooling=pooling), qualities,
                 subsampling=subsampling)
  files: dict[int, bytes] = {}

  def size_of(q: int) -> int:
    files[q] = encode_jpeg(mixed, quality=q, subsampling=subsampling)
    return len(files[q])

  q_final = find_quality(size_of, target_bytes, tolerance=tolerance)
  return files[q_final], q_final
