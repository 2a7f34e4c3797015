"""Real bitstreams: exact round trips, determinism (jit / no jit / fresh process), rate, fuzzing."""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp.codecs import bitstream, compression, learned, pretrained

# rbg keys: XLA compiles threefry (the default) ~7x slower on CPU for model inits.
KEY = jax.random.key(0, impl="rbg")


@pytest.fixture(scope="module")
def kodak(shared_data):
  return np.asarray(Image.open(shared_data / "kodak" / "kodim23.png"))


@functools.lru_cache(maxsize=None)
def _small_codec(architecture: str):
  """A small untrained model (coding must be exact whatever the parameters)."""
  model = learned.build(architecture, num_filters=8, num_latent=12)
  x = np.zeros((1, 64, 64, 3), np.float32)
  params = jax.jit(lambda k: model.init(k, x, mode="dequantize"))(KEY)["params"]
  return model, jax.device_get(params)


@pytest.fixture(params=["factorized", "hyperprior"])
def codec(request):
  return _small_codec(request.param)


@pytest.fixture
def hyperprior():
  """The harder case for determinism: y's tables depend on floats computed from z."""
  return _small_codec("hyperprior")


@pytest.mark.parametrize("crop", [(96, 128), (37, 53)])  # a Kodak crop and an odd size
def test_round_trip_is_exact(codec, kodak, crop):
  model, params = codec
  image = kodak[100:100 + crop[0], 200:200 + crop[1]]
  data = compression.compress(model, params, image)
  y_enc, z_enc = compression.encode_symbols(model, params, image)
  header, y_dec, z_dec = compression.decode_symbols(model, params, data)
  np.testing.assert_array_equal(y_dec, y_enc)
  if z_enc is not None:
    np.testing.assert_array_equal(z_dec, z_enc)
  assert (header.height, header.width) == crop
  decoded = compression.decompress(model, params, data)
  assert decoded.shape == (*crop, 3) and decoded.dtype == np.uint8
  # The reconstruction is the synthesis of exactly the encoder's symbols.
  expected = np.asarray(compression._synthesize(model, params, y_enc))[0, :crop[0], :crop[1]]
  np.testing.assert_array_equal(decoded, expected)


@pytest.mark.slow   # 15 s: every op of the codec compiled on its own
def test_same_bytes_without_jit(hyperprior, kodak):
  model, params = hyperprior
  image = kodak[:64, :64]
  data = compression.compress(model, params, image)
  decoded = compression.decompress(model, params, data)
  with jax.disable_jit():
    assert compression.compress(model, params, image) == data
    np.testing.assert_array_equal(compression.decompress(model, params, data), decoded)


def test_fresh_process_decodes_identically(hyperprior, kodak, tmp_path):
  model, params = hyperprior
  image = kodak[:64, :128]
  data = compression.compress(model, params, image)
  pretrained.save(tmp_path / "m.npz", model, params)
  (tmp_path / "s.jcx").write_bytes(data)
  script = ("import numpy as np, pathlib; from jaxcomp.codecs import pretrained, compression\n"
            f"d = pathlib.Path({str(tmp_path)!r})\n"
            "m, p, _ = pretrained.load_file(d / 'm.npz')\n"
            "np.save(d / 'x.npy', compression.decompress(m, p, (d / 's.jcx').read_bytes()))\n"
            "assert compression.compress(m, p, np.load(d / 'i.npy')) == (d / 's.jcx').read_bytes()\n")
  np.save(tmp_path / "i.npy", image)
  subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
  np.testing.assert_array_equal(np.load(tmp_path / "x.npy"),
                                compression.decompress(model, params, data))


def test_corrupt_truncated_and_foreign_streams_raise(codec, kodak):
  model, params = codec
  data = compression.compress(model, params, kodak[:64, :64])
  rng = np.random.default_rng(0)
  cases = [b"", b"GIF89a", rng.bytes(200), data + b"x", data[:-4]]
  for _ in range(150):
    d = bytearray(data)
    d[rng.integers(len(d))] ^= 1 << rng.integers(8)
    cases.append(bytes(d))
  cases += [data[:rng.integers(len(data))] for _ in range(150)]
  for d in cases:
    with pytest.raises(bitstream.StreamError):
      compression.decompress(model, params, d)


def test_stream_of_another_model_is_refused(codec, kodak):
  model, params = codec
  data = compression.compress(model, params, kodak[:64, :64])
  other = jax.tree.map(lambda a: a * 1.01, params)
  with pytest.raises(bitstream.StreamError, match="tables"):
    compression.decompress(model, other, data)
  wider = learned.build(learned.architecture_of(model), num_filters=8, num_latent=16)
  with pytest.raises(bitstream.StreamError, match="M=12"):
    compression.decompress(wider, params, data)


def test_bad_images():
  model = learned.build("factorized", num_filters=8, num_latent=12)
  for image, match in [(np.zeros((8, 8), np.uint8), "RGB"), (np.zeros((8, 8, 3)), "uint8")]:
    with pytest.raises(ValueError, match=match):
      compression.compress(model, {}, image)


def test_rate_matches_likelihood_estimate(kodak):
  """Shipped (trained) model: stream bits within 1 % of -sum log2 p, plus the header."""
  name = "hyperprior-q1"
  model, params, _ = pretrained.load(name)
  image = kodak[:256, :384]
  data = compression.compress(model, params, image, name=name)
  estimate = sum(compression.estimate_bits(model, params, image).values())
  payload_bits = 8 * (len(data) - bitstream.header_size(name))
  assert abs(payload_bits - estimate) <= 0.01 * estimate, (payload_bits, estimate)
