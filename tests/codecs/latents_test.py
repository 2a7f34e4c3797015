"""Hyperprior latents: from the bitstream (no synthesis) = from the images; clear errors.

References: `compression.compress` / `decode_symbols` (the real streams), the
hyperprior's own `hyper_synthesize` and the 0.11 scale bound of the Gaussian
conditional (Ballé et al. 2018, Sec. 3; CompressAI `GaussianConditional`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import data as data_lib
from jaxcomp.codecs import bitstream, compression, latents, learned, pretrained

KEY = jax.random.key(0, impl="rbg")   # rbg: XLA compiles it far faster than threefry on CPU


@functools.lru_cache(maxsize=None)
def _images() -> np.ndarray:
  """Two 64x64 crops of the packaged Kodak images, uint8 [2, 64, 64, 3]."""
  images = data_lib.load_images(data_lib.sample_kodak_dir())
  return np.stack([im[200:264, 300:364] for im in images[:2]])


@functools.lru_cache(maxsize=None)
def _shipped(name: str = "hyperprior-q1"):
  model, params, _ = pretrained.load(name)
  return model, params


@functools.lru_cache(maxsize=None)
def _forward_fn(model):
  """One jitted pass shared by the tests (one compilation)."""
  return jax.jit(lambda p, x: latents.forward(model, p, x))


def _foreign_stream(architecture: str, image_shape: tuple[int, ...]) -> bytes:
  """A well-formed stream header of another codec (empty streams): refused before decoding."""
  header = bitstream.Header("checkpoint", architecture, "classic", 128, 192, 0, *image_shape[:2])
  return bitstream.pack(header, b"", b"")


def test_latents_from_stream_equal_latents_of_the_image():
  model, params = _shipped()
  images = _images()
  y_batch, sigma_batch, *_ = _forward_fn(model)(params, jnp.asarray(images, jnp.float32) / 255.0)
  assert y_batch.shape == sigma_batch.shape == (2, 4, 4, model.num_latent)   # 64 / 16
  tables = compression.coding_tables(model, params)
  for i, image in enumerate(images):
    stream = compression.compress(model, params, image, tables=tables)
    y_hat, sigma_hat = latents.latents_from_stream(stream, model, params, tables=tables)
    assert y_hat.shape == sigma_hat.shape == (4, 4, model.num_latent)
    # y-hat is integers (offset 0): exactly the symbols the encoder coded.
    y_symbols, z_symbols = compression.encode_symbols(model, params, image)
    np.testing.assert_array_equal(y_hat, y_symbols[0].astype(np.float32))
    np.testing.assert_array_equal(y_hat, np.asarray(y_batch[i]))
    # sigma-hat = max(h_s(z_hat), 0.11), z_hat = symbols + medians; the batched pass runs
    # another XLA program (batch 2, fused differently): equal to float32 rounding.
    z_hat = z_symbols.astype(np.float32) + np.asarray(model.latent_offsets(params)["z"])
    scales = model.apply({"params": params}, z_hat, method=model.hyper_synthesize)
    np.testing.assert_allclose(sigma_hat, np.maximum(np.asarray(scales[0]), 0.11), rtol=1e-5)
    np.testing.assert_allclose(sigma_hat, np.asarray(sigma_batch[i]), rtol=1e-5, atol=1e-6)
    assert sigma_hat.min() >= 0.11


def test_latents_from_symbols_is_batched_and_checks_its_input():
  model, params = _shipped()
  y_symbols, z_symbols = compression.encode_symbols(model, params, _images()[0])
  y2, s2 = latents.latents_from_symbols(model, params, np.concatenate([y_symbols] * 2),
                                        np.concatenate([z_symbols] * 2))
  np.testing.assert_array_equal(y2[0], y2[1])       # integer symbols: exact
  # Scales from h_s: XLA:CPU's Eigen convolutions need not round two batch positions
  # alike (1 ulp here), so equal to float32 rounding.
  np.testing.assert_allclose(s2[0], s2[1], rtol=1e-6, atol=0)
  with pytest.raises(ValueError, match="integer"):
    latents.latents_from_symbols(model, params, y_symbols.astype(np.float32), z_symbols)
  with pytest.raises(ValueError, match="images"):
    latents.latents_from_symbols(model, params, y_symbols, np.concatenate([z_symbols] * 2))


def test_symbols_invert_the_dequantized_latents():
  model, params = _shipped()
  out = _forward_fn(model)(params, jnp.asarray(_images(), jnp.float32) / 255.0)
  y_sym, z_sym = latents.symbols(model, params, out.y_hat, out.z_hat)
  y_enc, z_enc = compression.encode_symbols(model, params, _images()[1])
  np.testing.assert_array_equal(np.asarray(y_sym[1]), y_enc[0])
  np.testing.assert_array_equal(np.asarray(z_sym[1]), z_enc[0])


@pytest.mark.slow   # two gradient compilations of the codec (the task test's joint mode has one)
def test_training_modes_are_differentiable():
  """"ste" keeps the stream's values and passes gradients to the encoder; "noise" is a proxy."""
  model, params = _shipped()
  x = jnp.asarray(_images(), jnp.float32) / 255.0

  def total(p, mode):
    y_hat, sigma_hat = latents.latents(model, p, x, mode=mode, key=KEY)
    return jnp.sum(y_hat) + jnp.sum(sigma_hat)

  y_ste, s_ste = latents.latents(model, params, x, mode="ste")
  y_deq, s_deq = latents.latents(model, params, x)
  np.testing.assert_array_equal(y_ste, y_deq)
  np.testing.assert_array_equal(s_ste, s_deq)
  for mode in ("ste", "noise"):
    grads = jax.grad(total)(params, mode)
    g_a = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads["g_a"])])
    assert np.all(np.isfinite(g_a)) and np.abs(g_a).max() > 0
    assert np.abs(np.ravel(grads["h_s"]["conv_0"]["kernel"])).max() > 0


def test_a_stream_of_another_codec_is_refused():
  model, params = _shipped("hyperprior-q1")
  image = _images()[0]
  foreign = _foreign_stream("factorized", image.shape)
  with pytest.raises(bitstream.StreamError, match="made by factorized"):
    latents.latents_from_stream(foreign, model, params)
  q2_model, q2_params = _shipped("hyperprior-q2")      # same architecture, other tables
  other = compression.compress(q2_model, q2_params, image)
  with pytest.raises(bitstream.StreamError, match="tables"):
    latents.latents_from_stream(other, model, params)
  with pytest.raises(bitstream.StreamError, match="magic"):
    latents.latents_from_stream(b"JFIF not a stream", model, params)


def test_a_model_without_hyperprior_is_refused():
  f_model = learned.build("factorized", num_filters=8, num_latent=8)   # checked before params
  stream = _foreign_stream("factorized", (64, 64))
  with pytest.raises(ValueError, match="not a hyperprior codec"):
    latents.latents_from_stream(stream, f_model, {})
  with pytest.raises(ValueError, match="not a hyperprior codec"):
    latents.latents(f_model, {}, jnp.zeros((1, 64, 64, 3)))
  with pytest.raises(ValueError, match="not a hyperprior codec"):
    latents.latents_from_symbols(f_model, {}, np.zeros((1, 4, 4, 8), np.int32),
                                 np.zeros((1, 1, 1, 8), np.int32))


def test_bad_images_and_modes_are_refused():
  model, params = _shipped()
  with pytest.raises(ValueError, match="multiples of 64"):
    latents.latents(model, params, jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="float images"):
    latents.latents(model, params, jnp.zeros((1, 64, 64, 3), jnp.uint8))
  with pytest.raises(ValueError, match="mode"):
    latents.latents(model, params, jnp.zeros((1, 64, 64, 3)), mode="symbols")
