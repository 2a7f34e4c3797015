"""JPEG-DL: a differentiable JPEG layer with trainable quantization tables.

Exactly the authors' layer (../shared/JPEG_DL.md; their `helper/JPEG_layer.py`):
the pixel <-> coefficient transform of `jaxcomp.ops.jpeg_transform` ([0, 1] images
scaled to [0, 255] and shifted by -128; JFIF YCbCr with a +0.5 chroma offset; every
plane ZERO-padded to a multiple of 8, no chroma subsampling; 8x8 orthonormal DCT
blocks) around `rounds` cascaded
soft quantize-dequantize stages (`jaxcomp.ops.quantization.soft_quantize`, L = 5
candidates, b = 8 bits), each with its own tables; inverse DCT, crop, exact inverse
colour transform, +128, /255. No clamp of the output (the classifier's normalisation
follows, in `models.classifier.ImageClassifier`). The map runs as
`jaxcomp.ops.jpeg_dl_layer.apply`: one C++ kernel on a CPU device, XLA's ops elsewhere.

Parameters, `variables["params"]["round_{r}"]` for r = 0..rounds-1:
- "luma_q" [8, 8] (Y steps) and "chroma_q" [8, 8] (shared by Cb and Cr): 128 per
  round, the article's count. Grey input (`num_channels=1`, e.g. Fashion-MNIST) has
  only "luma_q": 64 per round.
- with `alpha_mode="trainable"`: also "luma_alpha" / "chroma_alpha" [8, 8], initialised
  to `alpha` (256 per round for RGB).
Before every forward pass the steps are clamped to [q_min, 255] (alpha to >= 1e-5) as
the authors' forward pre-hook does; the clamp is straight-through (the gradient is the
one at the clamped value, as in their in-place clamp), and the optimizer transform
`project_tables` (the task chains it after the optimizer) reproduces their in-place
projection after each update exactly.
`alpha_mode`: "fixed" (default, the constant `alpha = 5`), "trainable" (per entry) or
"hardness_matching" (`alpha = hardness / q**2` from the clamped steps, no gradient
through alpha, as their pre-hook recomputes it under `no_grad`).

Initial tables: the IJG table at `quality` divided by `quality_divisor` (the simple
option), or `init_tables`, or set after `init` with `set_tables` from the recipes of
`jaxcomp.layers.jpeg_table_recipes` (sensitivity, LSQ), which also exports learned
tables as integer JPEG tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp.ops import jpeg_dl_layer, jpeg_transform
from jaxcomp.ops.jpeg_tables import check_quality, quality_tables
from jaxcomp.ops.quantization import index_window
from jaxcomp.registry import Registry

Q_MAX = 255.0        # upper clamp of the steps (JPEG_DL.md)
ALPHA_MIN = 1e-5     # lower clamp of a trainable alpha (the authors' `smallest_float32`)


def _check_input(x: jax.Array, num_channels: int) -> None:
  if x.ndim != 4 or x.shape[-1] != num_channels:
    raise ValueError(f"JpegLayer expects [B, H, W, {num_channels}] images, got {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"JpegLayer expects float images in [0, 1], got dtype {x.dtype}")


def _straight_through_clip(x: jax.Array, lo: float, hi: float) -> jax.Array:
  return x + jax.lax.stop_gradient(jnp.clip(x, lo, hi) - x)


# How a round's hardness alpha is obtained: mode -> alpha(layer, q, p, names, channels),
# `q` the stacked clamped steps [C, 1, 1, 1, 8, 8], `p` the round's parameters.
ALPHA_MODES: Registry[Callable[..., Any]] = Registry("JPEG-DL alpha mode")
ALPHA_MODES.register("fixed", lambda layer, q, p, names, channels: layer.alpha)
ALPHA_MODES.register(
    "hardness_matching",
    lambda layer, q, p, names, channels: jax.lax.stop_gradient(layer.hardness / q ** 2))


@ALPHA_MODES.register("trainable")
def _trainable_alpha(layer, q, p, names, channels):
  alphas = [_straight_through_clip(p[n.replace("_q", "_alpha")], ALPHA_MIN, np.inf)
            for n in names]
  return jnp.stack([alphas[c] for c in channels]).reshape(q.shape)


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
    bits: b, its index range `[-2**(b-1) + 1, 2**(b-1) - 1]` (the authors'), or
      "auto": per frequency `+-(ceil(B / q) + L)` with B the largest |coefficient| an
      image in [0, 1] can produce (DC: 1024; `jpeg_transform.coefficient_bounds`),
      so no coefficient is ever clipped whatever the step. A departure from the
      authors' fixed clamp, which real JPEG never needs because its integer steps
      are >= 1 (b = 8 clips every |z| > 127 q: a luma DC step below 8.06 clips
      bright and dark blocks).
    band_size: for the XLA formulation (`ops.jpeg_dl_layer.reference`: other
      platforms, float64, several CPU devices): None (default) quantizes the whole
      batch in one pass; an integer runs the quantizer over bands of block rows
      holding at most that many coefficients, in a loop (the result does not depend
      on it; it bounds the quantizer's temporaries; docs/performance.md: one pass
      was faster with `jaxcomp.cpu_allocator`). The C++ kernel that runs on one CPU
      device (`ops.jpeg_dl_layer`) has no such temporaries and ignores it.
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
  bits: int | str = 8
  band_size: int | None = None

  def window(self) -> dict[str, Any]:
    """The index-window arguments of `soft_quantize`: `bits=b`, or the "auto" bounds."""
    if self.bits == "auto":
      bounds = jpeg_transform.coefficient_bounds(self.num_channels)
      return {"bits": None, "bound": bounds.reshape(-1, 1, 1, 1, 8, 8).astype(np.float32)}
    if not isinstance(self.bits, int) or isinstance(self.bits, bool):
      raise ValueError(f"bits must be an integer or 'auto', got {self.bits!r}")
    return {"bits": self.bits}

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
      raise ValueError(f"unknown alpha_mode {self.alpha_mode!r}; expected {ALPHA_MODES.names()}")
    _check_input(x, self.num_channels)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jpeg_dl_layer.apply(x, *self._tables(x.dtype), self.num_candidates, self.band_size)

  def _tables(self, dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Every round's steps and alpha, [rounds, C, 8, 8], and index window [2, rounds, C, 8, 8]
    (`jpeg_dl_layer.apply`)."""
    window = self.window()
    steps, alphas, windows = [], [], []
    for r in range(self.rounds):
      q, alpha = _stage(self, self._round_params(r), dtype)
      lo, hi = index_window(q, num_candidates=self.num_candidates, bits=window["bits"],
                            bound=window.get("bound"))
      q, alpha, lo, hi = jnp.broadcast_arrays(q, jnp.asarray(alpha, dtype), lo, hi)
      steps.append(q)
      alphas.append(alpha)
      windows.append(jnp.stack([lo, hi]))
    shape = (self.rounds, self.num_channels, 8, 8)
    return (jnp.stack(steps).reshape(shape), jnp.stack(alphas).reshape(shape),
            jnp.stack(windows, axis=1).reshape(2, *shape))


def _stage(layer: JpegLayer, p: dict, dtype) -> tuple[jax.Array, Any]:
  """(steps [C, 1, 1, 1, 8, 8] clamped straight-through, alpha) of one round's params."""
  channels = (0,) if layer.num_channels == 1 else (0, 1, 1)   # Y; Cb and Cr share
  names = ("luma_q",) if layer.num_channels == 1 else ("luma_q", "chroma_q")
  tables = [_straight_through_clip(p[n], layer.q_min, Q_MAX) for n in names]
  q = jnp.stack([tables[c] for c in channels]).reshape(-1, 1, 1, 1, 8, 8).astype(dtype)
  return q, ALPHA_MODES.get(layer.alpha_mode)(layer, q, p, names, channels)


# Below this PSNR (dB) of the layer's output against its input, `diagnose` warns.
WARN_PSNR = 30.0


def diagnose(layer: JpegLayer, params: dict, images: jax.Array) -> dict[str, float]:
  """How much the layer's index window clips, and how far its output is from its input.

  Args:
    layer: the JPEG-DL layer.
    params: its parameters (`variables["params"]["jpeg_layer"]` in a classifier).
    images: [B, H, W, C] in [0, 1], e.g. the first training batch.

  Returns:
    `clipped_fraction`: of the first round's coefficients, the fraction whose
    nearest index `round(z / q)` lies outside the window (so the layer cannot
    reconstruct them); `clipped_fraction_dc`: the same over DC coefficients;
    `psnr`: of the layer's output against its input (dB, peak 1); `luma_dc_step`.
  """
  x = jnp.asarray(images, jnp.float32)
  z = jpeg_transform.layer_coefficients(x)                       # [C, B, nh, nw, 8, 8]
  q, _ = _stage(layer, params["round_0"], z.dtype)
  q = q.reshape(-1, 1, 1, 1, 8, 8)
  w = layer.window()
  lo, hi = index_window(q, num_candidates=layer.num_candidates, bits=w["bits"],
                        bound=w.get("bound"))
  k = jnp.round(z / q)
  clipped = (k < lo) | (k > hi)
  out = layer.apply({"params": params}, x)
  mse = jnp.mean(jnp.square(out - x))
  return {"clipped_fraction": float(jnp.mean(clipped)),
          "clipped_fraction_dc": float(jnp.mean(clipped[..., 0, 0])),
          "psnr": float(10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-20))),
          "luma_dc_step": float(q[0, 0, 0, 0, 0, 0])}


def diagnostic_message(stats: dict[str, float], layer: JpegLayer) -> tuple[str, bool]:
  """A one-line report of `diagnose`, and whether it is a warning (PSNR < `WARN_PSNR`)."""
  line = (f"JPEG-DL layer: {100 * stats['clipped_fraction']:.2f} % of the coefficients "
          f"({100 * stats['clipped_fraction_dc']:.2f} % of the DC) clipped by the index "
          f"window (bits={layer.bits}), output {stats['psnr']:.1f} dB from the input")
  if stats["psnr"] >= WARN_PSNR:
    return line, False
  cause = ""
  if layer.bits != "auto":
    limit = 1024.0 / (2 ** (layer.bits - 1) - 1)
    cause = (f"; the luma DC step {stats['luma_dc_step']:.3g} is "
             f"{'below' if stats['luma_dc_step'] < limit else 'near'} 1024 / "
             f"{2 ** (layer.bits - 1) - 1} = {limit:.2f}, so bright and dark blocks clip")
  return (f"WARNING: {line} (below {WARN_PSNR:.0f} dB){cause}. Remedies: "
          "model.jpeg.bits='auto' (a window that never clips) or a larger b, or initial "
          "steps that do not clip (model.jpeg.step_floor='no_clip', or another init)"), True


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


def project_params(params: Any, *, q_min: float = 1e-5) -> Any:
  """Clamps steps (leaves named "*_q") to [q_min, 255] and trainable alphas ("*_alpha")
  to >= 1e-5, the authors' in-place clamp; other leaves are returned unchanged."""
  def one(path, x):
    name = str(getattr(path[-1], "key", path[-1]))
    if name.endswith("_q"):
      return jnp.clip(x, q_min, Q_MAX)
    return jnp.maximum(x, ALPHA_MIN) if name.endswith("_alpha") else x
  return jax.tree_util.tree_map_with_path(one, params)


def project_tables(*, q_min: float = 1e-5) -> optax.GradientTransformation:
  """An optax transform that makes every update land inside the layer's ranges.

  Chained after the optimizer, `params + updates` becomes
  `project_params(params + updates)`: the authors' in-place projection after each
  step (JPEG_DL.md), applied by the optimizer. Only leaves named "*_q" / "*_alpha"
  are affected, so it can be chained over a whole classifier's parameters.
  """
  def update(updates, state, params=None):
    if params is None:
      raise ValueError("project_tables needs the parameters (optax's update(..., params))")
    new = project_params(jax.tree.map(jnp.add, params, updates), q_min=q_min)
    return jax.tree.map(jnp.subtract, new, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
