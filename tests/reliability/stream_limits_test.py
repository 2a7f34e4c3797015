"""Decompression bombs, exact payload consumption, the pixel limit and tiled coding (issue 14.1, 14.13)."""

from __future__ import annotations

import functools
import resource
import time

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp.codecs import bitstream, compression, learned, pretrained
from jaxcomp.entropy import coder, gaussian_conditional

KEY = jax.random.key(0, impl="rbg")


@pytest.fixture(scope="module")
def shipped():
  name = next(n for n in pretrained.list_models() if n.startswith("hyperprior"))
  model, params, _ = pretrained.load(name)
  return name, model, params, compression.coding_tables(model, params)


@functools.lru_cache(maxsize=None)
def _small_codec(architecture: str):
  """An untrained small model: tiling must be exact whatever the parameters."""
  model = learned.build(architecture, num_filters=8, num_latent=12)
  x = np.zeros((1, 64, 64, 3), np.float32)
  return model, jax.device_get(jax.jit(lambda k: model.init(k, x, mode="dequantize"))(KEY)["params"])


def _header(shipped, height, width):
  name, model, _, tables = shipped
  return bitstream.Header(name, "hyperprior", model.gdn, model.num_filters, model.num_latent,
                          tables.fingerprint, height, width)


def _max_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def test_a_short_stream_claiming_a_large_image_is_refused_at_once(shipped):
  # Issue 14.1: a 49-byte stream (valid header, empty payloads, good CRC) decoded into
  # a flat image; claiming 8192^2 it drove the decoder past 8-10 GB.
  _, model, params, tables = shipped
  rss = _max_rss_gb()
  for side in (256, 8192, 11584):
    data = bitstream.pack(_header(shipped, side, side), b"", b"")
    assert len(data) == 49
    start = time.monotonic()
    with pytest.raises(bitstream.StreamError, match="too short"):
      compression.decompress(model, params, data, tables=tables)
    assert time.monotonic() - start < 30          # no decoding of 50 M symbols from nothing
  for side in (16384, 65536):                          # above the default pixel limit
    data = bitstream.pack(_header(shipped, side, side), bytes(4096), bytes(65536))
    with pytest.raises(bitstream.StreamError, match="above the limit of 134217728 pixels"):
      compression.decompress(model, params, data, tables=tables)
  assert _max_rss_gb() - rss < 0.5                      # nothing image-sized was allocated


def test_payloads_must_be_consumed_exactly(shipped, shared_data):
  # Issue 14.1: a y payload of zeros decoded to a near-white image; the entropy
  # decoder read past the end of its words without complaint.
  name, model, params, tables = shipped
  image = np.asarray(Image.open(shared_data / "kodak" / "kodim23.png"))[:128, :192]
  data = compression.compress(model, params, image, name=name, tables=tables)
  header, z, y = bitstream.unpack(data)
  variants = {"zeros": (z, bytes(len(y))), "padded": (z, y + bytes(4)), "short": (z, y[:-4]),
              "random words": (z, y + b"\x01\x02\x03\x04"), "z padded": (z + bytes(8), y)}
  for what, (zz, yy) in variants.items():
    with pytest.raises(bitstream.StreamError, match="not exactly the coding|too short"):
      compression.decompress(model, params, bitstream.pack(header, zz, yy), tables=tables)
  np.testing.assert_array_equal(compression.decompress(model, params, data, tables=tables),
                                compression.decompress(model, params, data))


def test_the_coder_refuses_streams_that_run_out_or_run_over():
  table = gaussian_conditional.scale_table()
  tables = coder.Tables.from_pmfs(*gaussian_conditional.pmf_table(table))
  rng = np.random.default_rng(0)
  idx = rng.integers(0, len(tables), 5000)
  sym = np.round(rng.normal(size=idx.shape) * table[idx]).astype(np.int32)
  data = coder.encode(sym, idx, tables)
  for bad in (b"", data[:-4], data + bytes(4), data + data[-4:], bytes(len(data))):
    with pytest.raises(coder.CodingError):
      coder.decode(bad, idx, tables)
  np.testing.assert_array_equal(coder.decode(data, idx, tables), sym)


def test_min_length_is_a_lower_bound():
  # The most probable symbol of the sharpest table, many times: the cheapest stream there is.
  tables = coder.Tables.from_pmfs(*gaussian_conditional.pmf_table(
      gaussian_conditional.scale_table()))
  best = int(np.argmin(tables._min_bits))
  mode = int(np.argmax(tables.counts[best])) + int(tables.offsets[best])
  for n in (0, 1, 10 ** 3, 10 ** 6, 10 ** 7):
    counts = np.zeros(len(tables), np.int64)
    counts[best] = n
    data = coder.encode(np.full(n, mode, np.int32), np.full(n, best, np.int32), tables)
    assert coder.min_length(counts, tables) <= len(data), n
    assert coder.min_length(n, tables) <= len(data), n
  assert coder.min_length(10 ** 7, tables) > 0          # measured stream: 104 bytes


def test_compress_refuses_images_above_the_limit(shipped):
  _, model, params, tables = shipped
  image = np.zeros((100, 300, 3), np.uint8)
  with pytest.raises(ValueError, match="30000 pixels is above the limit of 29999"):
    compression.compress(model, params, image, tables=tables, max_pixels=29999)
  data = compression.compress(model, params, image, tables=tables, max_pixels=30000)
  with pytest.raises(bitstream.StreamError, match="above the limit"):
    compression.decompress(model, params, data, tables=tables, max_pixels=29999)


def test_windows_cover_the_image_with_their_context():
  # The tiling's geometry (the slow tests below check the streams): the cores tile
  # [0, size) in order, every window has one length and holds its core with `halo`
  # of context on each side, or reaches the border.
  for size, core, halo in ((300, 128, 64), (4096, 1536, 256), (2049, 2032, 8), (100, 128, 64)):
    windows = compression._windows(size, core, halo)
    assert windows[0][1] == 0 and windows[-1][2] == size
    span = min(size, core + 2 * halo)
    for (w0, lo, hi), nxt in zip(windows, windows[1:] + [(None, size, None)]):
      assert hi == nxt[1] and 0 < hi - lo <= core and 0 <= w0 and w0 + span <= size
      assert (lo - w0 >= halo or w0 == 0) and (w0 + span - hi >= halo or w0 + span == size)


@pytest.mark.slow
@pytest.mark.parametrize("architecture, tile, size", [
    ("factorized", 256, (300, 420)),          # 64 px of context, 128 px cores: 3 x 4 windows
    ("bls2017", 256, (300, 420)),
    ("hyperprior", 640, (700, 720)),          # 256 px of context, 128 px cores: 6 x 6 windows
])
def test_tiled_coding_gives_the_untiled_stream(monkeypatch, shared_data, architecture, tile,
                                               size):
  # Issue 14.13: coding an 8000x8000 photo took 13.9 GB; above TILE^2 pixels the
  # transforms now run window by window. Forcing small windows here: the stream and
  # the reconstruction are those of the untiled path, exactly (XLA:CPU).
  model, params = _small_codec(architecture)
  photo = np.asarray(Image.open(shared_data / "photos" / "001.png").convert("RGB"))
  image = photo[:size[0], :size[1]]
  untiled = compression.compress(model, params, image)
  reference = compression.decompress(model, params, untiled)
  monkeypatch.setattr(compression, "TILE", tile)
  assert compression._tiling(model, *size) is not None
  tiled = compression.compress(model, params, image)
  assert tiled == untiled
  np.testing.assert_array_equal(compression.decompress(model, params, tiled), reference)
