"""Real bitstreams from learned codecs: `compress(model, params, image) -> bytes` and back.

Pipeline (Ballé et al. 2018, Sec. 4): pad the image (edge replication) to a
multiple of the model's downsampling, analyse, quantize to integer symbols
(around the medians for the factorized prior, around 0 for the Gaussian
conditional), entropy-code them with the integer tables of `entropy.coder`,
and wrap the streams in the `bitstream` container. Everything model-specific
comes through the codec protocol (`learned.LearnedCodec`). A side latent (the
hyperprior's z) is coded first; the decoder rebuilds the table indexes of y
from z's symbols with *the same jitted function* the encoder used
(`_table_indexes`), so both sides compute bit-identical floats and pick the
same tables.

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
from jaxcomp.entropy import coder
from jaxcomp.entropy.quantization import quantize_latents


@dataclasses.dataclass(frozen=True, eq=False)
class CodingTables:
  """Integer tables of a model: one `coder.Tables` per coded latent ("y", and "z" if any)."""
  tables: dict[str, coder.Tables]

  @property
  def fingerprint(self) -> int:
    crc = 0
    for name in sorted(self.tables):      # "y" then "z", as format version 1 defines it
      crc = zlib.crc32(self.tables[name].fingerprint.to_bytes(4, "little"), crc)
    return crc

  def __getitem__(self, name: str) -> coder.Tables:
    return self.tables[name]


def coding_tables(model: nn.Module, params: dict) -> CodingTables:
  """The integer coding tables of `model` with `params` (deterministic; a few ms)."""
  return CodingTables(dict(model.coding_tables(params)))


def _check_codec(model: nn.Module) -> None:
  names = getattr(type(model), "coded_latents", None)
  if names not in (("y",), ("z", "y")):
    raise ValueError(f"{type(model).__name__} is not a learned codec with coded latents "
                     f"('y',) or ('z', 'y') (see learned.LearnedCodec)")


@functools.partial(jax.jit, static_argnums=0)
def _analyze(model: nn.Module, params: dict, x: jax.Array) -> dict[str, jax.Array]:
  """Integer symbols of every coded latent of padded images `x`."""
  latents = model.apply({"params": params}, x, method=model.analyze)
  offsets = model.latent_offsets(params)
  return {n: quantize_latents(latents[n], "symbols", offsets[n]) for n in model.coded_latents}


def _dequantize(model: nn.Module, params: dict, symbols: dict[str, jax.Array]
                ) -> dict[str, jax.Array]:
  offsets = model.latent_offsets(params)
  return {n: s.astype(jnp.float32) + offsets[n] for n, s in symbols.items()}


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _table_indexes(model: nn.Module, params: dict, name: str, symbols: dict[str, jax.Array],
                   shape: tuple[int, ...]) -> jax.Array:
  """Table index of every element of latent `name`, from the latents coded before it.

  The encoder and the decoder call this same jitted function on the same
  integer symbols, so both compute bit-identical floats and pick the same tables.
  """
  decoded = _dequantize(model, params, symbols)
  return model.apply({"params": params}, name, decoded, shape, method=model.table_indexes)


@functools.partial(jax.jit, static_argnums=0)
def _synthesize(model: nn.Module, params: dict, y_symbols: jax.Array) -> jax.Array:
  """uint8 reconstruction of the padded image from y's symbols."""
  y_hat = _dequantize(model, params, {"y": y_symbols})["y"]
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


def _latent_shapes(model: nn.Module, params: dict, height: int, width: int
                   ) -> dict[str, tuple[int, ...]]:
  d = model.downsampling
  x = jax.ShapeDtypeStruct((1, -(-height // d) * d, -(-width // d) * d, 3), jnp.float32)
  shapes = jax.eval_shape(lambda v: model.apply({"params": params}, v, method=model.analyze), x)
  return {n: tuple(shapes[n].shape) for n in model.coded_latents}


def _header(model: nn.Module, tables: CodingTables, name: str, height: int, width: int
            ) -> bitstream.Header:
  return bitstream.Header(name, learned.architecture_of(model), model.gdn, model.num_filters,
                          model.num_latent or model.num_filters, tables.fingerprint, height, width)


def encode_symbols(model: nn.Module, params: dict, image: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None]:
  """Integer symbols `(y, z or None)` of a uint8 `(H, W, 3)` image, as `compress` codes them."""
  _check_codec(model)
  image = _check_image(image)
  symbols = jax.device_get(_analyze(model, params, pad_image(image, model.downsampling)))
  return symbols["y"], symbols.get("z")


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
  symbols = {"y": y_sym} if z_sym is None else {"z": z_sym, "y": y_sym}
  tables = tables or coding_tables(model, params)
  streams = {}
  for n in model.coded_latents:            # the side latent first: y's tables depend on it
    before = {k: symbols[k] for k in model.coded_latents[:model.coded_latents.index(n)]}
    index = np.asarray(_table_indexes(model, params, n, before, symbols[n].shape))
    streams[n] = coder.encode(symbols[n], index, tables[n])
  header = _header(model, tables, name, *np.shape(image)[:2])
  return bitstream.pack(header, streams.get("z", b""), streams["y"])


def decode_symbols(model: nn.Module, params: dict, data: bytes, *,
                   tables: CodingTables | None = None
                   ) -> tuple[bitstream.Header, np.ndarray, np.ndarray | None]:
  """Parses and entropy-decodes a stream: `(header, y symbols, z symbols or None)`.

  Raises:
    bitstream.StreamError: as `decompress`.
  """
  _check_codec(model)
  header, z_stream, y_stream = bitstream.unpack(data)
  tables = tables or coding_tables(model, params)
  expected = _header(model, tables, header.model, header.height, header.width)
  if header != expected:
    raise bitstream.StreamError(
        f"stream was made by {header.architecture} N={header.num_filters} "
        f"M={header.num_latent} gdn={header.gdn} (tables {header.fingerprint:08x}), not by this "
        f"model ({expected.architecture} N={expected.num_filters} M={expected.num_latent} "
        f"gdn={expected.gdn}, tables {expected.fingerprint:08x})")
  shapes = _latent_shapes(model, params, header.height, header.width)
  streams = {"z": z_stream, "y": y_stream}
  if "z" not in shapes and z_stream:
    raise bitstream.StreamError("unexpected side-information stream for a model without one")
  symbols: dict[str, np.ndarray] = {}
  try:
    for n in model.coded_latents:
      index = np.asarray(_table_indexes(model, params, n, dict(symbols), shapes[n]))
      symbols[n] = coder.decode(streams[n], index, tables[n])
  except coder.CodingError as e:
    raise bitstream.StreamError(str(e)) from None
  return header, symbols["y"], symbols.get("z")


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
