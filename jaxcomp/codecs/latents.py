"""Hyperprior latents for classification in the compressed domain (SPEC Sec. 6).

A compressed-domain classifier reads `y_hat` (the quantized latents) and
`sigma_hat` (their scales from the hyper-synthesis) instead of decoded pixels
(Torfason et al. 2018; Deng & Karam 2021; report 004, Sec. 2.3). From a
stream they cost the entropy decoding of z and y and the hyper-synthesis
`h_s(z_hat)`, never the synthesis transform `g_s`:

  * `latents_from_stream(stream, model, params)`: one `.jcx` stream ->
    `decode_symbols` -> `y_hat = symbols + offset`, `sigma_hat =
    max(h_s(z_hat), 0.11)` (the Gaussian conditional's scale bound, Ballé et
    al. 2018 Sec. 3; `gaussian_conditional.SCALE_BOUND`).
  * `latents_from_symbols`: the same for a batch of integer symbols (cached
    latents, the benchmark's batched decoding).
  * `latents(model, params, images)` / `forward`: the same for a batch of
    images without the byte round trip, jit-able and differentiable in the
    training modes ("ste", "noise") for fine-tuning the encoder with the
    classifier; `forward` also returns the likelihoods (the rate) and the
    reconstruction (the distortion), which XLA drops when unused.

Every function takes a codec of the `learned.LearnedCodec` protocol with a
side latent z and a `hyper_synthesize` method (the hyperprior); any other
model raises `ValueError`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.codecs import compression
from jaxcomp.entropy.gaussian_conditional import SCALE_BOUND
from jaxcomp.entropy.quantization import quantize_latents
from jaxcomp.ops.bounds import lower_bound


FORWARD_MODES = ("dequantize", "ste", "noise")


class CodecOutputs(NamedTuple):
  """What a compressed-domain pipeline takes from the codec for a batch of images.

  Attributes:
    y_hat: float32 [B, h, w, M], the quantized latents (integers + offset).
    sigma_hat: float32 [B, h, w, M] >= 0.11, their bounded scales.
    z_hat: float32 [B, h / 4, w / 4, N], the quantized side latents.
    likelihoods: {"y": [B, h, w, M], "z": [B, h / 4, w / 4, N]} in (0, 1].
    x_hat: float32 [B, H, W, 3], the (unclipped) reconstruction.
  """
  y_hat: jax.Array
  sigma_hat: jax.Array
  z_hat: jax.Array
  likelihoods: dict[str, jax.Array]
  x_hat: jax.Array


def check_hyperprior(model: nn.Module) -> None:
  """Raises ValueError unless `model` is a codec with a side latent and a hyper-synthesis."""
  if getattr(type(model), "coded_latents", None) != ("z", "y") or \
      not callable(getattr(model, "hyper_synthesize", None)):
    raise ValueError(f"{type(model).__name__} is not a hyperprior codec (coded latents "
                     "('z', 'y') and a hyper_synthesize method): compressed-domain "
                     "classification reads y-hat and the scales of h_s(z-hat)")


def bound_scales(scales: jax.Array) -> jax.Array:
  """`max(scales, 0.11)`, the Gaussian conditional's bound, with its gradient-passing backward."""
  return lower_bound(scales, SCALE_BOUND)


@functools.partial(jax.jit, static_argnums=0)
def _latents_from_symbols(model: nn.Module, params: dict, y_symbols: jax.Array,
                          z_symbols: jax.Array) -> tuple[jax.Array, jax.Array]:
  offsets = model.latent_offsets(params)
  y_hat = y_symbols.astype(jnp.float32) + offsets["y"]
  z_hat = z_symbols.astype(jnp.float32) + offsets["z"]
  scales = model.apply({"params": params}, z_hat, method=model.hyper_synthesize)
  return y_hat, bound_scales(scales)


def latents_from_symbols(model: nn.Module, params: dict, y_symbols: jax.Array,
                         z_symbols: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(y_hat, sigma_hat)` from the entropy-decoded integer symbols (no synthesis).

  Args:
    model: a hyperprior codec (`check_hyperprior`).
    params: its "params" collection.
    y_symbols: integer [B, h, w, M], `round(y - offset_y)`.
    z_symbols: integer [B, h / 4, w / 4, N], `round(z - medians)`.

  Returns:
    y_hat float32 [B, h, w, M] and sigma_hat float32 [B, h, w, M] >= 0.11.
  """
  check_hyperprior(model)
  y_symbols, z_symbols = jnp.asarray(y_symbols), jnp.asarray(z_symbols)
  for name, s in (("y_symbols", y_symbols), ("z_symbols", z_symbols)):
    if s.ndim != 4 or not jnp.issubdtype(s.dtype, jnp.integer):
      raise ValueError(f"{name} must be integer [B, h, w, C], got {s.dtype} {s.shape}")
  if y_symbols.shape[0] != z_symbols.shape[0]:
    raise ValueError(f"y_symbols and z_symbols hold {y_symbols.shape[0]} and "
                     f"{z_symbols.shape[0]} images")
  return _latents_from_symbols(model, params, y_symbols, z_symbols)


def latents_from_stream(stream: bytes, model: nn.Module, params: dict, *,
                        tables: compression.CodingTables | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
  """`(y_hat, sigma_hat)` of one `.jcx` stream: side information, hyper-synthesis, y; no `g_s`.

  Args:
    stream: bytes made by `compression.compress` with this model and params.
    model, params: the hyperprior codec that made it.
    tables: `compression.coding_tables(model, params)`, to reuse across streams.

  Returns:
    y_hat and sigma_hat, float32 [h, w, M] each: the latents of the image
    padded (edge replication) to a multiple of `model.downsampling`.

  Raises:
    ValueError: `model` is not a hyperprior codec.
    bitstream.StreamError (a ValueError): corrupt data, or a stream of another
      codec, size or coding tables (`compression.decode_symbols`).
  """
  check_hyperprior(model)
  _, y_symbols, z_symbols = compression.decode_symbols(model, params, stream, tables=tables)
  y_hat, sigma_hat = _latents_from_symbols(model, params, y_symbols, z_symbols)
  return np.asarray(y_hat[0]), np.asarray(sigma_hat[0])


def _check_images(model: nn.Module, images: jax.Array) -> None:
  check_hyperprior(model)
  d = model.downsampling
  if images.ndim != 4 or images.shape[-1] != 3 or not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"expected float images [B, H, W, 3] in [0, 1], got {images.dtype} "
                     f"{images.shape}")
  if images.shape[1] % d or images.shape[2] % d:
    raise ValueError(f"image height and width must be multiples of {d}, got "
                     f"{images.shape[1]}x{images.shape[2]} (upsample or pad first)")


def forward(model: nn.Module, params: dict, images: jax.Array, *, mode: str = "dequantize",
            key: jax.Array | None = None) -> CodecOutputs:
  """The codec's pass as a compressed-domain pipeline uses it (jit-able, differentiable).

  `y_hat` and `sigma_hat` in mode "dequantize" equal `latents_from_stream` of
  `compress` of the same (uint8) images; "ste" gives the same values with the
  straight-through gradient, "noise" the additive-uniform training proxy.

  Args:
    model: a hyperprior codec (`check_hyperprior`).
    params: its "params" collection.
    images: float [B, H, W, 3] in [0, 1], H and W multiples of `model.downsampling`.
    mode: "dequantize" (inference), "ste" or "noise" (`quantization.MODES`).
    key: PRNG key, for mode "noise".

  Returns:
    `CodecOutputs` (y_hat, sigma_hat, z_hat, likelihoods, x_hat).
  """
  _check_images(model, images)
  if mode not in FORWARD_MODES:
    raise ValueError(f"mode must be one of {FORWARD_MODES}, got {mode!r}")
  return _apply(model, params, images, mode, key)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(model: nn.Module, params: dict, images: jax.Array, mode: str,
           key: jax.Array | None) -> CodecOutputs:
  """`forward` after its checks, compiled once per (model, mode, shapes): called outside
  a jit, the codec's ops would otherwise run one by one (8 x 128^2 images: 28.6 s against
  4.0 s with the compilation)."""
  out = model.apply({"params": params}, images, mode=mode, key=key)
  return CodecOutputs(out["y_hat"], bound_scales(out["scales"]), out["z_hat"],
                      out["likelihoods"], out["x_hat"])


def latents(model: nn.Module, params: dict, images: jax.Array, *, mode: str = "dequantize",
            key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """`(y_hat, sigma_hat)` of a batch of images, float32 [B, H/16, W/16, M] each (`forward`)."""
  out = forward(model, params, images, mode=mode, key=key)
  return out.y_hat, out.sigma_hat


def symbols(model: nn.Module, params: dict, y_hat: jax.Array, z_hat: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
  """`round(latent - offset)` as int32, of dequantized y and z: the symbols a stream codes."""
  offsets = model.latent_offsets(params)
  return (quantize_latents(y_hat, "symbols", offsets["y"]),
          quantize_latents(z_hat, "symbols", offsets["z"]))
