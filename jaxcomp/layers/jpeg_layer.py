"""JPEG-DL: a differentiable JPEG layer with trainable quantization tables.

Exactly the authors' layer (../shared/JPEG_DL.md; their `helper/JPEG_layer.py`):
[0, 1] images are scaled to [0, 255] and shifted by -128; JFIF YCbCr with a +0.5
chroma offset (`jaxcomp.ops.color`); every plane is ZERO-padded to a multiple of 8 (no
chroma subsampling) and cut into 8x8 orthonormal DCT blocks; then `rounds` cascaded
soft quantize-dequantize stages (`jaxcomp.ops.quantization.soft_quantize`, L = 5
candidates, b = 8 bits), each with its own tables; inverse DCT, crop, exact inverse
colour transform, +128, /255. No clamp of the output (the classifier's normalisation
follows, in `models.classifier.ImageClassifier`).

Parameters, `variables["params"]["round_{r}"]` for r = 0..rounds-1:
- "luma_q" [8, 8] (Y steps) and "chroma_q" [8, 8] (shared by Cb and Cr): 128 per
  round, the article's count. Grey input (`num_channels=1`, e.g. Fashion-MNIST) has
  only "luma_q": 64 per round.
- with `alpha_mode="trainable"`: also "luma_alpha" / "chroma_alpha" [8, 8], initialised
  to `alpha` (256 per round for RGB).
Before every forward pass the steps are clamped to [q_min, 255] (alpha to >= 1e-5) as
the authors' forward pre-hook does; the clamp is straight-through (the gradient is the
one at the clamped value, as in their in-place clamp), and `project_params` applied
after each optimizer update reproduces their in-place projection exactly.
`alpha_mode`: "fixed" (default, the constant `alpha = 5`), "trainable" (per entry) or
"hardness_matching" (`alpha = hardness / q**2` from the clamped steps, no gradient
through alpha, as their pre-hook recomputes it under `no_grad`).

Initial tables: the IJG table at `quality` divided by `quality_divisor` (the simple
option), or `init_tables`, or set after `init` with `set_tables` from
`sensitivity_tables` (the CIFAR / fine-grained recipe) or `lsq_tables` (ImageNet).
Learned tables leave as integer JPEG tables through `export_tables`, for
`jaxcomp.codecs.jpeg_files.encode_jpeg(..., qtables=..., subsampling="4:4:4")`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp.ops import color, dct
from jaxcomp.ops.jpeg_tables import check_quality, quality_tables
from jaxcomp.ops.quantization import soft_quantize

ALPHA_MODES = ("fixed", "trainable", "hardness_matching")
INITS = ("quality", "sensitivity", "lsq")
Q_MAX = 255.0        # upper clamp of the steps (JPEG_DL.md)
ALPHA_MIN = 1e-5     # lower clamp of a trainable alpha (the authors' `smallest_float32`)


def _check_input(x: jax.Array, num_channels: int) -> None:
  if x.ndim != 4 or x.shape[-1] != num_channels:
    raise ValueError(f"JpegLayer expects [B, H, W, {num_channels}] images, got {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"JpegLayer expects float images in [0, 1], got dtype {x.dtype}")


def _colour_matrix(num_channels: int) -> np.ndarray:
  return color.RGB_TO_YCBCR if num_channels == 3 else np.ones((1, 1))


def _mix(planes: list[jax.Array], matrix: np.ndarray) -> list[jax.Array]:
  return [sum(float(matrix[o, i]) * planes[i] for i in range(len(planes)))
          for o in range(matrix.shape[0])]


def _to_coefficients(x, matrix, scale, shift, offsets, rows):
  """`DCT(zero_pad(planes))`, `planes[c] = sum_i matrix[c, i] (scale x_i + shift) + offsets[c]`.

  Returns the blocks in bands of `rows` block rows, [nh / rows, C, rows, B, nw, 8, 8],
  so that the quantizer can run one band at a time (see `JpegLayer.__call__`).
  """
  v = x * scale + shift
  planes = _mix([v[..., i] for i in range(v.shape[-1])], matrix)
  planes = jnp.stack([p + o for p, o in zip(planes, offsets)])            # [C, B, H, W]
  planes = dct.pad_to_multiple(planes, 8, mode="constant")
  c, b, h, w = planes.shape
  blocks = planes.reshape(c, b, h // 8 // rows, rows, 8, w // 8, 8)
  return dct.dct2(blocks.transpose(2, 0, 3, 1, 5, 4, 6))


def _to_pixels(z, height, width, matrix, offsets, scale, shift):
  """`x_i = scale sum_c matrix[i, c] (crop(IDCT(z))_c - offsets[c]) + shift`, [B, H, W, C].

  `z` is in bands, [nh / rows, C, rows, B, nw, 8, 8].
  """
  bands, c, rows, b, nw, _, _ = z.shape
  planes = dct.idct2(z).transpose(1, 3, 0, 2, 5, 4, 6).reshape(c, b, bands * rows * 8, nw * 8)
  planes = planes[:, :, :height, :width]
  planes = _mix([planes[i] - o for i, o in enumerate(offsets)], matrix)
  return jnp.stack([p * scale + shift for p in planes], axis=-1)


def _offsets(num_channels: int) -> tuple[float, ...]:
  return (0.0, 0.5, 0.5) if num_channels == 3 else (0.0,)


def layer_coefficients(x: jax.Array) -> jax.Array:
  """The layer's DCT coefficients before quantization.

  Args:
    x: [B, H, W, C] float images in [0, 1], C = 3 (RGB) or 1 (grey).

  Returns:
    [C, B, ceil(H/8), ceil(W/8), 8, 8] (float32 or wider): DCT of (Y, Cb, Cr) of
    `255 x - 128` with the +0.5 chroma offset (grey: of `255 x - 128`), zero-padded to
    multiples of 8.
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.moveaxis(_coefficients(x, x.shape[1], x.shape[2], 1)[:, :, 0], 0, 2)


def layer_reconstruct(z: jax.Array, height: int, width: int) -> jax.Array:
  """Inverse of `layer_coefficients`: [C, B, nh, nw, 8, 8] -> [B, H, W, C] (unclamped)."""
  return _reconstruct(jnp.moveaxis(z, 2, 0)[:, :, None], height, width, 1)


# Both transforms are affine; their VJPs are the adjoint linear maps, computed by the
# other transform's code with the transposed colour matrix (crop is the adjoint of
# zero-padding, the inverse DCT that of the DCT). Autodiff of the channel slicing and
# stacking would instead emit full-size pad / update-slice passes (~3x slower).
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _coefficients(x, height, width, rows):
  del height, width
  c = x.shape[-1]
  return _to_coefficients(x, _colour_matrix(c), 255.0, -128.0, _offsets(c), rows)


def _coefficients_fwd(x, height, width, rows):
  return _coefficients(x, height, width, rows), None


def _coefficients_bwd(height, width, rows, _, ct):
  del rows
  c = ct.shape[1]
  return (_to_pixels(ct, height, width, _colour_matrix(c).T, (0.0,) * c, 255.0, 0.0),)


_coefficients.defvjp(_coefficients_fwd, _coefficients_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _reconstruct(z, height, width, rows):
  del rows                                    # = z.shape[2]; the VJP needs it statically
  c = z.shape[1]
  return _to_pixels(z, height, width, np.linalg.inv(_colour_matrix(c)), _offsets(c),
                    1.0 / 255.0, 128.0 / 255.0)


def _reconstruct_fwd(z, height, width, rows):
  return _reconstruct(z, height, width, rows), None


def _reconstruct_bwd(height, width, rows, _, ct):
  del height, width
  c = ct.shape[-1]
  return (_to_coefficients(ct, np.linalg.inv(_colour_matrix(c)).T, 1.0 / 255.0, 0.0,
                           (0.0,) * c, rows),)


_reconstruct.defvjp(_reconstruct_fwd, _reconstruct_bwd)


def _rows_per_band(shape: tuple[int, ...], band_size: int) -> int:
  """The largest divisor of the block-row count whose band holds <= band_size values."""
  b, h, w, c = shape
  nh, per_row = -(-h // 8), c * b * -(-w // 8) * 64
  return max([k for k in range(1, nh + 1) if nh % k == 0 and k * per_row <= band_size],
             default=1)


def _straight_through_clip(x: jax.Array, lo: float, hi: float) -> jax.Array:
  return x + jax.lax.stop_gradient(jnp.clip(x, lo, hi) - x)


class JpegLayer(nn.Module):
  """JPEG-DL layer (module docstring). Call: [B, H, W, C] in [0, 1] -> same shape.

  Attributes:
    num_channels: 3 (RGB) or 1 (grey: luma only).
    rounds: cascaded quantization stages, each with its own tables.
    quality: IJG quality 1..100 of the initial tables ...
    quality_divisor: ... divided by this (JPEG_DL.md's simple option).
    init_tables: optional (luma, chroma) [8, 8] initial steps instead (chroma ignored
      for grey); nested tuples or arrays.
    q_min: lower clamp of the steps (upper: 255).
    alpha: the soft quantizer's hardness ("fixed"), or its initial value ("trainable").
    alpha_mode: one of `ALPHA_MODES`.
    hardness: for "hardness_matching", `alpha = hardness / q**2`.
    num_candidates: L, candidates of the soft quantizer.
    bits: b, its index range.
    band_size: coefficients quantized per step of the loop over bands of block rows
      (speed only, the result does not depend on it; 2**18 float32 values, 1 MiB, is
      about one core's L2 cache on the machine the benchmark ran on).
  """
  num_channels: int = 3
  rounds: int = 1
  quality: int = 50
  quality_divisor: float = 1.0
  init_tables: Any = None
  q_min: float = 1e-5
  alpha: float = 5.0
  alpha_mode: str = "fixed"
  hardness: float = 2.0
  num_candidates: int = 5
  bits: int = 8
  band_size: int = 2 ** 18

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict, num_channels: int,
                  **overrides) -> "JpegLayer":
    """From `config_lib.jpeg_layer_config()` fields.

    `init`, `sensitivity_checkpoint`, `sensitivity_images` and `q_max` drive the
    trainer's `sensitivity_tables` / `lsq_tables` + `set_tables` step; until then the
    layer holds the quality tables.
    """
    if cfg.init not in INITS:
      raise ValueError(f"unknown JPEG layer init {cfg.init!r}; expected one of {INITS}")
    kwargs = dict(num_channels=num_channels, rounds=cfg.rounds, quality=cfg.quality,
                  quality_divisor=cfg.quality_divisor, q_min=cfg.q_min, alpha=cfg.alpha,
                  alpha_mode=cfg.alpha_mode, hardness=cfg.hardness,
                  num_candidates=cfg.num_candidates, bits=cfg.bits)
    kwargs.update(overrides)
    return cls(**kwargs)

  def _initial(self, name: str) -> np.ndarray:
    if self.init_tables is not None:
      return np.asarray(self.init_tables[0 if name == "luma" else 1], np.float32)
    luma, chroma = quality_tables(check_quality(self.quality))
    return (luma if name == "luma" else chroma).astype(np.float32) / self.quality_divisor

  def _round_params(self, r: int) -> dict[str, jax.Array]:
    names = ("luma",) if self.num_channels == 1 else ("luma", "chroma")

    def init(_):
      p = {f"{n}_q": jnp.asarray(self._initial(n)) for n in names}
      if self.alpha_mode == "trainable":
        p.update({f"{n}_alpha": jnp.full((8, 8), self.alpha, jnp.float32) for n in names})
      return p

    return self.param(f"round_{r}", init)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_channels not in (1, 3):
      raise ValueError(f"num_channels must be 1 or 3, got {self.num_channels}")
    if self.alpha_mode not in ALPHA_MODES:
      raise ValueError(f"unknown alpha_mode {self.alpha_mode!r}; expected {ALPHA_MODES}")
    _check_input(x, self.num_channels)
    channels = (0,) if self.num_channels == 1 else (0, 1, 1)   # Y; Cb and Cr share
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    stages = []
    for r in range(self.rounds):
      p = self._round_params(r)
      names = ("luma_q",) if self.num_channels == 1 else ("luma_q", "chroma_q")
      tables = [_straight_through_clip(p[n], self.q_min, Q_MAX) for n in names]
      q = jnp.stack([tables[c] for c in channels]).reshape(-1, 1, 1, 1, 8, 8).astype(x.dtype)
      if self.alpha_mode == "fixed":
        alpha = self.alpha
      elif self.alpha_mode == "hardness_matching":
        alpha = jax.lax.stop_gradient(self.hardness / q ** 2)
      else:
        alphas = [_straight_through_clip(p[n.replace("_q", "_alpha")], ALPHA_MIN, np.inf)
                  for n in names]
        alpha = jnp.stack([alphas[c] for c in channels]).reshape(q.shape)
      stages.append((q, alpha))

    def quantize_band(z):                      # [C, rows, B, nw, 8, 8]
      for q, alpha in stages:
        z = soft_quantize(z, q, alpha, num_candidates=self.num_candidates, bits=self.bits)
      return z

    # A band of block rows at a time (a loop, not one pass over the batch): the
    # quantizer's intermediates then stay in cache (2x faster on CPU at 224x224).
    rows = _rows_per_band(x.shape, self.band_size)
    z = jax.lax.map(quantize_band, _coefficients(x, x.shape[1], x.shape[2], rows))
    return _reconstruct(z, x.shape[1], x.shape[2], rows)


def set_tables(params: dict, luma, chroma=None, *, rounds: Iterable[int] | None = None
               ) -> dict:
  """A copy of the layer's `params` with the steps of `rounds` (default all) replaced.

  Args:
    params: the layer's parameters, `{"round_0": {"luma_q": ..., ...}, ...}` (in a
      classifier: `variables["params"]["jpeg_layer"]`).
    luma, chroma: [8, 8] steps (chroma unused for a grey layer).
    rounds: round indices to set.

  Returns:
    New params (the input is not modified); trainable alphas are kept.
  """
  new = {k: dict(v) for k, v in params.items()}
  for r in (range(len(new)) if rounds is None else rounds):
    p = new[f"round_{r}"]
    p["luma_q"] = jnp.asarray(luma, p["luma_q"].dtype).reshape(8, 8)
    if "chroma_q" in p:
      if chroma is None:
        raise ValueError("this layer has a chroma table: give chroma")
      p["chroma_q"] = jnp.asarray(chroma, p["chroma_q"].dtype).reshape(8, 8)
  return new


def project_params(params: dict, *, q_min: float = 1e-5) -> dict:
  """Clamps steps to [q_min, 255] and trainable alphas to >= 1e-5 (the authors'
  in-place clamp; apply after each optimizer update to match them exactly)."""
  def one(path, x):
    name = path[-1].key
    if name.endswith("_q"):
      return jnp.clip(x, q_min, Q_MAX)
    return jnp.maximum(x, ALPHA_MIN) if name.endswith("_alpha") else x
  return jax.tree_util.tree_map_with_path(one, params)


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
