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

Limits: images of more than `max_pixels` pixels (default `DEFAULT_MAX_PIXELS`)
are refused, by `compress` before the analysis and by the decoder from the
header alone, before anything is allocated; so is a stream too short to hold
the symbols its header announces (`coder.min_length`), and every payload must
be consumed exactly (`coder.decode`).

Tiling: above `TILE ** 2` padded pixels, the analysis, the table indexes and
the synthesis run on overlapping windows of at most `TILE x TILE` pixels with
`HALO_CELLS * model.downsampling` pixels of context on each side (cropped
away), so the transforms' memory is that of one window, not of the whole image
(an 8000 x 8000 photo codes in under 2 GB instead of 13.9). The windows depend
only on the image size, so the encoder and the decoder compute the table
indexes on the same windows with the same jitted function: bit-identical,
whatever the tiling does to floats. This makes `TILE` and `HALO_CELLS` part of
the stream format for images above `TILE ** 2` pixels (never change them
without a new format version). The context covers the receptive fields of the
built-in codecs (from their layers: at most 205 pixels for the hyperprior's z,
3 latent cells for the synthesis), so a window's values equal the untiled ones
up to float summation order; on XLA:CPU the streams and reconstructions come
out identical (tests/reliability/stream_limits_test.py).
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

DEFAULT_MAX_PIXELS = 2 ** 27   # 134 Mpixels, e.g. 16384 x 8192; `max_pixels=` changes it
TILE = 2048                    # largest window side the transforms run on at once
HALO_CELLS = 4                 # context around each window, in `model.downsampling` cells


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


def check_size(height: int, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
  """Raises ValueError if a `height x width` image has more than `max_pixels` pixels."""
  if height * width > max_pixels:
    raise ValueError(f"image of {height}x{width} = {height * width} pixels is above the limit "
                     f"of {max_pixels} pixels (max_pixels)")


def pad_image(image: np.ndarray, multiple: int) -> np.ndarray:
  """`(1, H', W', 3)` float32 in [0, 1], `image` padded bottom/right by edge replication."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode="edge")
  return (padded.astype(np.float32) / 255.0)[None]


def _latent_shapes(model: nn.Module, params: dict, height: int, width: int
                   ) -> dict[str, tuple[int, ...]]:
  """Shape of every coded latent of a `height x width` image (abstract: nothing is computed)."""
  d = model.downsampling
  leaves, treedef = jax.tree.flatten(params)
  return _abstract_latent_shapes(model, -(-height // d) * d, -(-width // d) * d, treedef,
                                 tuple((np.shape(v), np.result_type(v).str) for v in leaves))


@functools.lru_cache(maxsize=256)
def _abstract_latent_shapes(model: nn.Module, height: int, width: int, treedef,
                            leaves: tuple) -> dict[str, tuple[int, ...]]:
  """`_latent_shapes`, cached by the parameters' shapes (tracing `analyze` takes ~0.2 s)."""
  params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])
  x = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  shapes = jax.eval_shape(lambda p, v: model.apply({"params": p}, v, method=model.analyze),
                          params, x)
  return {n: tuple(shapes[n].shape) for n in model.coded_latents}


def _windows(size: int, core: int, halo: int) -> list[tuple[int, int, int]]:
  """`(window start, core start, core end)` along one axis of length `size`.

  The cores tile `[0, size)`; each window is `min(size, core + 2 halo)` long
  (one shape, one compilation) and holds its core with `halo` of context on
  each side, or up to the border.
  """
  span = min(size, core + 2 * halo)
  if span == size:
    return [(0, 0, size)]
  return [(min(max(lo - halo, 0), size - span), lo, min(lo + core, size))
          for lo in range(0, size, core)]


def _tiling(model: nn.Module, height: int, width: int) -> tuple[int, int, int, int] | None:
  """`(padded height, padded width, core, halo)` in pixels, or None to run untiled."""
  d = model.downsampling
  hp, wp = -(-height // d) * d, -(-width // d) * d
  if hp * wp <= TILE * TILE:
    return None
  halo = HALO_CELLS * d
  return hp, wp, max((TILE - 2 * halo) // d, 1) * d, halo


def _analyze_tiled(model: nn.Module, params: dict, image: np.ndarray,
                   tiling: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
  """`_analyze` of the padded image, window by window (see the module docstring)."""
  hp, wp, core, halo = tiling
  h, w = image.shape[:2]
  padded = np.pad(image, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
  shapes = _latent_shapes(model, params, h, w)
  strides = {n: hp // shape[1] for n, shape in shapes.items()}
  out = {n: np.empty(shape, np.int32) for n, shape in shapes.items()}
  for r0, rlo, rhi in _windows(hp, core, halo):
    for c0, clo, chi in _windows(wp, core, halo):
      span = (min(hp, core + 2 * halo), min(wp, core + 2 * halo))
      x = padded[r0:r0 + span[0], c0:c0 + span[1]].astype(np.float32) / 255.0
      symbols = jax.device_get(_analyze(model, params, x[None]))
      for n, s in strides.items():
        out[n][0, rlo // s:rhi // s, clo // s:chi // s] = symbols[n][
            0, (rlo - r0) // s:(rhi - r0) // s, (clo - c0) // s:(chi - c0) // s]
  return out


def _indexes(model: nn.Module, params: dict, name: str, before: dict[str, np.ndarray],
             shape: tuple[int, ...], tiling: tuple[int, int, int, int] | None) -> np.ndarray:
  """`_table_indexes` of latent `name` (shape `shape`), window by window when tiled."""
  if tiling is None:
    return np.asarray(_table_indexes(model, params, name, before, shape))
  hp, wp, core, halo = tiling
  span = (min(hp, core + 2 * halo), min(wp, core + 2 * halo))
  s = hp // shape[1]                         # pixels per cell of `name`
  strides = {n: hp // v.shape[1] for n, v in before.items()}
  out = np.empty(shape, np.int32)
  for r0, rlo, rhi in _windows(hp, core, halo):
    for c0, clo, chi in _windows(wp, core, halo):
      window = {n: v[:, r0 // strides[n]:(r0 + span[0]) // strides[n],
                     c0 // strides[n]:(c0 + span[1]) // strides[n]] for n, v in before.items()}
      index = np.asarray(_table_indexes(model, params, name, window,
                                        (shape[0], span[0] // s, span[1] // s, *shape[3:])))
      out[:, rlo // s:rhi // s, clo // s:chi // s] = index[
          :, (rlo - r0) // s:(rhi - r0) // s, (clo - c0) // s:(chi - c0) // s]
  return out


def _synthesize_tiled(model: nn.Module, params: dict, y_symbols: np.ndarray, height: int,
                      width: int, tiling: tuple[int, int, int, int]) -> np.ndarray:
  """uint8 `(height, width, 3)`: `_synthesize` window by window of y (module docstring)."""
  hp, _, core, halo = tiling
  s = hp // y_symbols.shape[1]               # pixels per latent cell
  cells = y_symbols.shape[1:3]
  out = np.empty((height, width, 3), np.uint8)
  for r0, rlo, rhi in _windows(cells[0], core // s, halo // s):
    for c0, clo, chi in _windows(cells[1], core // s, halo // s):
      span = (min(cells[0], (core + 2 * halo) // s), min(cells[1], (core + 2 * halo) // s))
      x = np.asarray(_synthesize(model, params, y_symbols[:, r0:r0 + span[0], c0:c0 + span[1]]))
      rows, cols = min(rhi * s, height) - rlo * s, min(chi * s, width) - clo * s
      if rows > 0 and cols > 0:
        out[rlo * s:rlo * s + rows, clo * s:clo * s + cols] = x[
            0, (rlo - r0) * s:(rlo - r0) * s + rows, (clo - c0) * s:(clo - c0) * s + cols]
  return out


def _header(model: nn.Module, tables: CodingTables, name: str, height: int, width: int
            ) -> bitstream.Header:
  return bitstream.Header(name, learned.architecture_of(model), model.gdn, model.num_filters,
                          model.num_latent or model.num_filters, tables.fingerprint, height, width)


def encode_symbols(model: nn.Module, params: dict, image: np.ndarray, *,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray | None]:
  """Integer symbols `(y, z or None)` of a uint8 `(H, W, 3)` image, as `compress` codes them.

  Raises:
    ValueError: not a learned codec, not a uint8 RGB image, or more than
      `max_pixels` pixels.
  """
  _check_codec(model)
  image = _check_image(image)
  check_size(*image.shape[:2], max_pixels)
  tiling = _tiling(model, *image.shape[:2])
  if tiling is None:
    symbols = jax.device_get(_analyze(model, params, pad_image(image, model.downsampling)))
  else:
    symbols = _analyze_tiled(model, params, image, tiling)
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
             tables: CodingTables | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
  """Compresses one image into a `.jcx` byte string.

  Args:
    model: a learned codec (`learned.build`).
    params: its "params" collection.
    image: uint8 `(H, W, 3)` RGB, up to 65536 on a side and `max_pixels` in all.
    name: the model name written into the header (a shipped model's name, or
      "checkpoint").
    tables: `coding_tables(model, params)`, to reuse across images.
    max_pixels: the largest image accepted (memory grows with it: see the
      module docstring).

  Returns:
    The stream: header, z stream (hyperprior), y stream.

  Raises:
    ValueError: a bad image (dtype, shape, more than `max_pixels` pixels).
  """
  y_sym, z_sym = encode_symbols(model, params, image, max_pixels=max_pixels)
  symbols = {"y": y_sym} if z_sym is None else {"z": z_sym, "y": y_sym}
  tables = tables or coding_tables(model, params)
  tiling = _tiling(model, *np.shape(image)[:2])
  streams = {}
  for n in model.coded_latents:            # the side latent first: y's tables depend on it
    before = {k: symbols[k] for k in model.coded_latents[:model.coded_latents.index(n)]}
    index = _indexes(model, params, n, before, symbols[n].shape, tiling)
    streams[n] = coder.encode(symbols[n], index, tables[n])
  header = _header(model, tables, name, *np.shape(image)[:2])
  return bitstream.pack(header, streams.get("z", b""), streams["y"])


def decode_symbols(model: nn.Module, params: dict, data: bytes, *,
                   tables: CodingTables | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
                   ) -> tuple[bitstream.Header, np.ndarray, np.ndarray | None]:
  """Parses and entropy-decodes a stream: `(header, y symbols, z symbols or None)`.

  Raises:
    bitstream.StreamError: as `decompress`.
  """
  _check_codec(model)
  header, z_stream, y_stream = bitstream.unpack(data)
  try:
    check_size(header.height, header.width, max_pixels)
  except ValueError as e:
    raise bitstream.StreamError(f"stream refused: {e}") from None
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
  for n, shape in shapes.items():          # before decoding (or allocating) anything
    need = coder.min_length(int(np.prod(shape)), tables[n])
    if len(streams[n]) < need:
      raise bitstream.StreamError(
          f"{n} stream of {len(streams[n])} bytes is too short for a {header.height}x"
          f"{header.width} image (at least {need} bytes)")
  tiling = _tiling(model, header.height, header.width)
  symbols: dict[str, np.ndarray] = {}
  try:
    for n in model.coded_latents:
      index = _indexes(model, params, n, dict(symbols), shapes[n], tiling)
      symbols[n] = coder.decode(streams[n], index, tables[n])
  except coder.CodingError as e:
    raise bitstream.StreamError(str(e)) from None
  return header, symbols["y"], symbols.get("z")


def decompress(model: nn.Module, params: dict, data: bytes, *,
               tables: CodingTables | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Decodes a stream made by `compress` with the same model and parameters.

  Args:
    model, params, tables: as `compress`.
    data: the stream.
    max_pixels: streams of larger images are refused before anything is
      decoded or allocated.

  Returns:
    uint8 `(H, W, 3)` reconstruction.

  Raises:
    bitstream.StreamError: corrupt, truncated, padded or foreign data, a stream
      made by another model (architecture, size or coding tables differ), or an
      image above `max_pixels`.
  """
  header, y_sym, _ = decode_symbols(model, params, data, tables=tables, max_pixels=max_pixels)
  tiling = _tiling(model, header.height, header.width)
  if tiling is not None:
    return _synthesize_tiled(model, params, y_sym, header.height, header.width, tiling)
  x_hat = np.asarray(_synthesize(model, params, y_sym))
  return x_hat[0, :header.height, :header.width]
