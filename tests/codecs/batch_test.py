"""Tests of batched coding (`codecs.batch.code`): `compress`'s streams, bits = their sizes.

Reference: `compression.compress` / `decompress` image by image (the one-image
path, itself tested against the likelihood estimate in compression_test.py).
Models are small and randomly initialised (rbg keys: XLA compiles threefry
slowly on CPU); a random model's large symbols also exercise the coder's escapes.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcomp.codecs import batch, bitstream, compression, learned


def _model(architecture: str, n: int, m: int):
  model = learned.build(architecture, num_filters=n, num_latent=m)
  x = np.zeros((1, model.downsampling, model.downsampling, 3), np.float32)
  params = jax.jit(lambda k: model.init(k, x)["params"])(jax.random.key(0, impl="rbg"))
  return model, params


@pytest.fixture(scope="module")
def images() -> np.ndarray:
  """Five 20x24 crops of a smooth pattern plus noise (not multiples of 16 or 64: padding)."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:20, :24]
  base = 127 + 80 * np.sin(yy / 3.0)[..., None] * np.cos(xx[..., None] / 4.0 + np.arange(3))
  return np.clip(base[None] + rng.normal(0, 20, (5, 20, 24, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("architecture,n,m", [
    ("bls2017", 8, 8), pytest.param("hyperprior", 8, 12, marks=pytest.mark.slow)])
def test_streams_and_bits_are_those_of_compress(images, architecture, n, m):
  model, params = _model(architecture, n, m)
  out = batch.code(model, params, images, name="test-model", batch_size=2)   # 3 batches, 1 padded
  assert out.images.shape == images.shape and out.images.dtype == np.uint8
  assert len(out.streams) == len(images)
  header = bitstream.header_size("test-model")
  for i, image in enumerate(images):
    stream = compression.compress(model, params, image, name="test-model")
    assert out.streams[i] == stream                       # bit-identical to the one-image path
    _, z, y = bitstream.unpack(stream)
    assert out.file_bits[i] == 8 * len(stream)
    assert out.payload_bits[i] == 8 * (len(z) + len(y)) == 8 * (len(stream) - header)
    np.testing.assert_array_equal(compression.decompress(model, params, stream), out.images[i])
  assert out.file_bits.dtype == out.payload_bits.dtype == np.int64


def test_batch_size_does_not_change_the_result(images):
  model, params = _model("bls2017", 8, 8)
  a = batch.code(model, params, images, batch_size=5)
  b = batch.code(model, params, images, batch_size=3)
  assert a.streams == b.streams
  np.testing.assert_array_equal(a.images, b.images)


def test_bad_input(images):
  model, params = _model("bls2017", 8, 8)
  cases = [(images.astype(np.float32), "uint8"), (images[..., :1], "RGB"),
           (images[0], r"\[B, H, W, 3\]"), (images[:0], "non-empty")]
  for bad, match in cases:
    with pytest.raises(ValueError, match=match):
      batch.code(model, params, bad)
  with pytest.raises(ValueError, match="batch_size"):
    batch.code(model, params, images, batch_size=0)
  with pytest.raises(ValueError, match="not a learned codec"):
    batch.code(object(), params, images)
