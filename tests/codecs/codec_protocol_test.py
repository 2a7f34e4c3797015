"""A new learned codec is one module and one registration: a tiny codec defined here
compresses and decompresses bit-exactly through the same public functions as the
shipped ones (`compression`, `bitstream`, `pretrained`), with no change to them."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.codecs import bitstream, compression, learned, pretrained
from jaxcomp.entropy.factorized import EntropyBottleneck
from jaxcomp.entropy.quantization import quantize_latents
from jaxcomp.ops.conv_transpose import conv_transpose


@learned.register("tiny-test", stream_id=250)
class TinyCodec(nn.Module):
  """One 4x4 / 2 convolution, a factorized prior, one transposed convolution."""
  num_filters: int = 6
  num_latent: int = 6
  gdn: str = "classic"            # unused; a header field of every codec
  downsampling: ClassVar[int] = 2
  coded_latents: ClassVar[tuple[str, ...]] = ("y",)

  @classmethod
  def preset(cls, quality):
    return (6, 6)

  def setup(self):
    self.analysis = nn.Conv(self.num_latent, (4, 4), strides=2, padding="SAME")
    self.synthesis_kernel = self.param("synthesis_kernel", nn.initializers.lecun_normal(),
                                       (4, 4, self.num_latent, 3))
    self.entropy_bottleneck = EntropyBottleneck(channels=self.num_latent)

  def __call__(self, x, *, mode="dequantize", key=None):
    y = self.analysis(x)
    y_hat, likelihood = self.entropy_bottleneck(y, mode=mode, key=key)
    return {"x_hat": self.synthesize(y_hat), "likelihoods": {"y": likelihood}, "y": y,
            "y_hat": y_hat}

  def analyze(self, x):
    return {"y": self.analysis(x)}

  def table_indexes(self, name, decoded, shape):
    return jnp.broadcast_to(jnp.arange(shape[-1], dtype=jnp.int32), shape)

  def synthesize(self, y_hat):
    return conv_transpose(y_hat, self.synthesis_kernel, 2) + 0.5

  def latent_offsets(self, params):
    return learned.FactorizedPrior.latent_offsets(self, params)

  def coding_tables(self, params):
    return learned.FactorizedPrior.coding_tables(self, params)


@pytest.fixture(scope="module")
def tiny():
  model = learned.build("tiny-test", num_filters=6, num_latent=6)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  return model, jax.device_get(params)


def test_the_registered_codec_round_trips_bit_exactly(tiny, tmp_path):
  model, params = tiny
  image = np.random.default_rng(0).integers(0, 256, (13, 10, 3), dtype=np.uint8)
  data = compression.compress(model, params, image, name="tiny")
  header, _, _ = bitstream.unpack(data)
  assert header.architecture == "tiny-test" and (header.height, header.width) == (13, 10)
  y_enc, z_enc = compression.encode_symbols(model, params, image)
  _, y_dec, z_dec = compression.decode_symbols(model, params, data)
  assert z_enc is None and z_dec is None
  np.testing.assert_array_equal(y_dec, y_enc)
  decoded = compression.decompress(model, params, data)
  expected = np.asarray(compression._synthesize(model, params, y_enc))[0, :13, :10]
  np.testing.assert_array_equal(decoded, expected)
  # The symbols are those of the model's own quantizer (round around the medians).
  y = model.apply({"params": params}, compression.pad_image(image, 2), method=model.analyze)["y"]
  medians = model.latent_offsets(params)["y"]
  np.testing.assert_array_equal(y_enc, quantize_latents(y, "symbols", medians))
  # Its weights travel through the same loader as the shipped codecs.
  pretrained.save(tmp_path / "tiny.npz", model, params, dtype="float32", note="test")
  loaded, loaded_params, meta = pretrained.load_file(tmp_path / "tiny.npz")
  assert type(loaded) is TinyCodec and meta["note"] == "test"
  assert compression.compress(loaded, loaded_params, image, name="tiny") == data


def test_a_stream_code_cannot_be_taken_twice():
  with pytest.raises(ValueError, match="stream_id 250"):
    learned.register("tiny-again", stream_id=250)(type("Again", (), {}))
