"""Real bitstreams from learned codecs: `compress(model, params, image) -> bytes` and back.

Pipeline (Ballé et al. 2018, Sec. 4): pad the image (edge replication) to a
multiple of the model's downsampling, analyse, quantize to integer symbols
(around the medians for the factorized prior, around 0 for the Gaussian
conditional), entropy-code them with the integer tables of `entropy.coder`,
and wrap the streams in the `bitstream` container. For the hyperprior, z is
coded first; the decoder rebuilds the scale indexes of y from z's symbols with
*the same jitted function* the encoder used (`_scale_indexes`), so both sides
compute bit-identical floats and pick the same tables.

Tables are built from the parameters (`coding_tables`) and identified by a
fingerprint in the stream header: a stream decodes only with the tables it was
encoded with, otherwise a `StreamError` says so.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.codecs import bitstream, learned
from jaxcomp.entropy import coder, factorized, gaussian_conditional
from jaxcomp.entropy.quantization import quantize


@dataclasses.dataclass(frozen=True, eq=False)
class CodingTables:
  """Integer tables of a model: `y` (per channel, or per scale for the hyperprior), `z`."""
  y: coder.Tables
  z: coder.Tables | None

  @property
  def fingerprint(self) -> int:
    crc = zlib.crc32(self.y.fingerprint.to_bytes(4, "little"))
    return crc if self.z is None else zlib.crc32(self.z.fingerprint.to_bytes(4, "little"), crc)


@functools.lru_cache(maxsize=1)
def _gaussian_tables() -> coder.Tables:
  return coder.Tables.from_pmfs(*gaussian_conditional.pmf_table(gaussian_conditional.scale_table()))


def _bottleneck_tables(params: dict) -> coder.Tables:
  return coder.Tables.from_pmfs(*factorized.pmf_table(
      *factorized.density_from_params(params["entropy_bottleneck"])))


def coding_tables(model: nn.Module, params: dict) -> CodingTables:
  """The integer coding tables of `model` with `params` (deterministic; a few ms)."""
  if learned.architecture_of(model) == "hyperprior":
    return CodingTables(_gaussian_tables(), _bottleneck_tables(params))
  return CodingTables(_bottleneck_tables(params), None)


def _medians(params: dict) -> jax.Array:
  return factorized.medians(params["entropy_bottleneck"]["quantiles"])


@functools.partial(jax.jit, static_argnums=0)
def _analyze(model: nn.Module, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """Integer symbols `(y, z)` (z None without hyperprior) of padded images `x`."""
  if isinstance(model, learned.ScaleHyperprior):
    y, z = model.apply({"params": params}, x, method=model.analyze)
    return quantize(y, "symbols"), quantize(z, "symbols", _medians(params))
  y = model.apply({"params": params}, x, method=model.analyze)
  return quantize(y, "symbols", _medians(params)), None


@functools.partial(jax.jit, static_argnums=0)
def _scale_indexes(model: nn.Module, params: dict, z_symbols: jax.Array) -> jax.Array:
  """Gaussian-table index of every y element, from z's symbols (encoder and decoder)."""
  z_hat = z_symbols.astype(jnp.float32) + _medians(params)
  scales = model.apply({"params": params}, z_hat, method=model.hyper_synthesize)
  return gaussian_conditional.scale_indexes(scales, gaussian_conditional.scale_table())


@functools.partial(jax.jit, static_argnums=0)
def _synthesize(model: nn.Module, params: dict, y_symbols: jax.Array) -> jax.Array:
  """uint8 reconstruction of the padded image from y's symbols."""
  y_hat = y_symbols.astype(jnp.float32)
  if not isinstance(model, learned.ScaleHyperprior):
    y_hat = y_hat + _medians(params)
  x_hat = model.apply({"params": params}, y_hat, method=model.synthesize)
  return jnp.round(jnp.clip(x_hat, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def _check_image(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
  if image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got {image.dtype}")
  if not (0 < image.shape[0] <= bitstream.MAX_SIDE and 0 < image.shape[1] <= bitstream.MAX_SIDE):
    raise ValueError(f"image size {image.shape[:2]} must be in [1, {bitstream.MAX_SIDE}]")
  return image


def pad_image(image: np.ndarray, multiple: int) -> np.ndarray:
  """`(1, H', W', 3)` float32 in [0, 1], `image` padded bottom/right by edge replication."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode="edge")
  return (padded.astype(np.float32) / 255.0)[None]


def _latent_shapes(model: nn.Module, height: int, width: int) -> tuple[tuple, tuple | None]:
  d = model.downsampling
  hp, wp = -(-height // d) * d, -(-width // d) * d
  m = model.num_latent or model.num_filters
  y_shape = (1, hp // 16, wp // 16, m)
  if isinstance(model, learned.ScaleHyperprior):
    return y_shape, (1, hp // 64, wp // 64, model.num_filters)
  return y_shape, None


def _channel_indexes(shape: tuple) -> np.ndarray:
  return np.broadcast_to(np.arange(shape[-1], dtype=np.int32), shape)


def _header(model: nn.Module, tables: CodingTables, name: str, height: int, width: int
            ) -> bitstream.Header:
  return bitstream.Header(name, learned.architecture_of(model), model.gdn, model.num_filters,
                          model.num_latent or model.num_filters, tables.fingerprint, height, width)


def encode_symbols(model: nn.Module, params: dict, image: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None]:
  """Integer symbols `(y, z or None)` of a uint8 `(H, W, 3)` image, as `compress` codes them."""
  image = _check_image(image)
  return jax.device_get(_analyze(model, params, pad_image(image, model.downsampling)))


@functools.partial(jax.jit, static_argnums=0)
def _likelihoods(model: nn.Module, params: dict, x: jax.Array) -> dict[str, jax.Array]:
  return model.apply({"params": params}, x, mode="dequantize")["likelihoods"]


def estimate_bits(model: nn.Module, params: dict, image: np.ndarray) -> dict[str, float]:
  """The rate the model's likelihoods predict for `compress(model, params, image)`.

  `-sum log2 p` (Ballé et al. 2018, Eq. 2) over the symbols `compress` codes
  (same padding, quantization around the medians / 0), summed in float64.

  Args:
    model, params: as `compress`.
    image: uint8 `(H, W, 3)` RGB.

  Returns:
    Bits per latent, `{"y": ..., "z": ...}` ("z" for the hyperprior only).
  """
  x = pad_image(_check_image(image), model.downsampling)
  likelihoods = jax.device_get(_likelihoods(model, params, x))
  return {k: float(-np.log2(np.asarray(v, np.float64)).sum()) for k, v in likelihoods.items()}


def compress(model: nn.Module, params: dict, image: np.ndarray, *, name: str = "checkpoint",
             tables: CodingTables | None = None) -> bytes:
  """Compresses one image into a `.jcx` byte string.

  Args:
    model: a learned codec (`learned.build`).
    params: its "params" collection.
    image: uint8 `(H, W, 3)` RGB, any size up to 65536 on a side.
    name: the model name written into the header (a shipped model's name, or
      "checkpoint").
    tables: `coding_tables(model, params)`, to reuse across images.

  Returns:
    The stream: header, z stream (hyperprior), y stream.
  """
  y_sym, z_sym = encode_symbols(model, params, image)
  tables = tables or coding_tables(model, params)
  z_stream = b""
  if z_sym is None:
    y_index = _channel_indexes(y_sym.shape)
  else:
    z_stream = coder.encode(z_sym, _channel_indexes(z_sym.shape), tables.z)
    y_index = np.asarray(_scale_indexes(model, params, z_sym))
  y_stream = coder.encode(y_sym, y_index, tables.y)
  header = _header(model, tables, name, *np.shape(image)[:2])
  return bitstream.pack(header, z_stream, y_stream)


def decode_symbols(model: nn.Module, params: dict, data: bytes, *,
                   tables: CodingTables | None = None
                   ) -> tuple[bitstream.Header, np.ndarray, np.ndarray | None]:
  """Parses and entropy-decodes a stream: `(header, y symbols, z symbols or None)`.

  Raises:
    bitstream.StreamError: as `decompress`.
  """
  header, z_stream, y_stream = bitstream.unpack(data)
  tables = tables or coding_tables(model, params)
  expected = _header(model, tables, header.model, header.height, header.width)
  if header != expected:
    raise bitstream.StreamError(
        f"stream was made by {header.architecture} N={header.num_filters} "
        f"M={header.num_latent} gdn={header.gdn} (tables {header.fingerprint:08x}), not by this "
        f"model ({expected.architecture} N={expected.num_filters} M={expected.num_latent} "
        f"gdn={expected.gdn}, tables {expected.fingerprint:08x})")
  y_shape, z_shape = _latent_shapes(model, header.height, header.width)
  z_sym = None
  try:
    if z_shape is None:
      if z_stream:
        raise coder.CodingError("unexpected z stream for a model without hyperprior")
      y_index = _channel_indexes(y_shape)
    else:
      z_sym = coder.decode(z_stream, _channel_indexes(z_shape), tables.z)
      y_index = np.asarray(_scale_indexes(model, params, z_sym))
    y_sym = coder.decode(y_stream, y_index, tables.y)
  except coder.CodingError as e:
    raise bitstream.StreamError(str(e)) from None
  return header, y_sym, z_sym


def decompress(model: nn.Module, params: dict, data: bytes, *,
               tables: CodingTables | None = None) -> np.ndarray:
  """Decodes a stream made by `compress` with the same model and parameters.

  Returns:
    uint8 `(H, W, 3)` reconstruction.

  Raises:
    bitstream.StreamError: corrupt, truncated or foreign data, or a stream made
      by another model (architecture, size or coding tables differ).
  """
  header, y_sym, _ = decode_symbols(model, params, data, tables=tables)
  x_hat = np.asarray(_synthesize(model, params, y_sym))
  return x_hat[0, :header.height, :header.width]
