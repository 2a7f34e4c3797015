"""The JPEG-DL layer's index window: bits="auto" never clips, the diagnostic counts what does,
and the sensitivity pass's BatchNorm mode."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.layers import jpeg_layer, jpeg_table_recipes
from jaxcomp.layers.jpeg_layer import JpegLayer
from jaxcomp.ops import jpeg_transform
from jaxcomp.tasks import classification


def _layer_and_params(bits, steps, *, alpha=1e4, num_channels=3, x=None):
  layer = JpegLayer(bits=bits, alpha=alpha, q_min=1e-5, num_channels=num_channels)
  x = jnp.zeros((1, 8, 8, num_channels)) if x is None else x
  params = layer.init(jax.random.key(0), x)["params"]
  chroma = None if num_channels == 1 else np.full((8, 8), steps, np.float32)
  return layer, jpeg_layer.set_tables(params, np.full((8, 8), steps, np.float32), chroma)


def test_coefficient_bounds_hold_the_dc_range():
  b = jpeg_transform.coefficient_bounds(3)
  assert b.shape == (3, 8, 8) and b[0, 0, 0] == pytest.approx(1024.0)   # 8 * 128
  assert b[1, 0, 0] == pytest.approx(1024.0)          # chroma in [-127, 128]: 8 * 128
  x = jax.random.uniform(jax.random.key(1), (64, 16, 16, 3))
  z = np.abs(np.asarray(jpeg_transform.layer_coefficients(x)))
  assert np.all(z.max(axis=(1, 2, 3)) <= b + 1e-3)  # random images stay inside


@pytest.mark.parametrize("value", [0.0, 1.0])       # DC -1024 (black) and +1016 (white)
def test_auto_window_reconstructs_extreme_blocks_at_tiny_steps(value):
  x = jnp.full((1, 8, 8, 3), value)
  auto, params = _layer_and_params("auto", 0.05, x=x)
  out = jax.jit(auto.apply)({"params": params}, x)
  # Hard rounding at q = 0.05: every coefficient within q/2, so pixels within 0.5/255.
  assert float(jnp.max(jnp.abs(out - x))) < 0.5 / 255
  fixed, _ = _layer_and_params(8, 0.05, x=x)
  clipped = jax.jit(fixed.apply)({"params": params}, x)
  assert float(jnp.max(jnp.abs(clipped - x))) > 0.4      # b = 8: |z| <= 127 * 0.05 = 6.35


def test_auto_equals_fixed_bits_where_they_do_not_clip():
  x = jax.random.uniform(jax.random.key(2), (4, 16, 24, 3))
  layer8 = JpegLayer(quality=50, alpha=5.0)
  params = layer8.init(jax.random.key(0), x)["params"]   # luma DC step 16 >= 8.06
  auto = JpegLayer(quality=50, alpha=5.0, bits="auto")
  stats = jpeg_layer.diagnose(layer8, params, x)
  assert stats["clipped_fraction"] == 0.0
  np.testing.assert_array_equal(jax.jit(layer8.apply)({"params": params}, x),
                                jax.jit(auto.apply)({"params": params}, x))
  g8 = jax.grad(lambda p: layer8.apply({"params": p}, x).sum())(params)
  ga = jax.grad(lambda p: auto.apply({"params": p}, x).sum())(params)
  jax.tree.map(np.testing.assert_array_equal, g8, ga)


def test_diagnostic_counts_clipped_coefficients_like_a_direct_count():
  x = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3))
  layer, params = _layer_and_params(8, 1.0, x=x)
  stats = jpeg_layer.diagnose(layer, params, x)
  # Direct count: the nearest index round(z / 1) outside [-127, 127] (b = 8).
  z = np.asarray(jpeg_transform.layer_coefficients(x), np.float64)
  k = np.round(z / 1.0)
  expected = np.mean(np.abs(k) > 127)
  assert stats["clipped_fraction"] == pytest.approx(expected, abs=1e-7) and expected > 0
  assert stats["clipped_fraction_dc"] == pytest.approx(np.mean(np.abs(k[..., 0, 0]) > 127))
  out = np.asarray(layer.apply({"params": params}, x), np.float64)
  psnr = 10 * np.log10(1 / np.mean((out - np.asarray(x)) ** 2))
  assert stats["psnr"] == pytest.approx(psnr, abs=1e-3)


def test_the_warning_fires_for_unit_steps_at_8_bits_and_not_with_auto():
  # Bright and dark blocks, as real photos have: their DC (+-1000) is far outside +-127.
  x = jnp.concatenate([jnp.full((1, 16, 16, 3), 0.05), jnp.full((1, 16, 16, 3), 0.95),
                       jax.random.uniform(jax.random.key(4), (2, 16, 16, 3))])
  layer, params = _layer_and_params(8, 1.0, alpha=5.0, x=x)
  line, warn = jpeg_layer.diagnostic_message(jpeg_layer.diagnose(layer, params, x), layer)
  assert warn and "WARNING" in line and "bits='auto'" in line and "8.06" in line
  auto, _ = _layer_and_params("auto", 1.0, alpha=5.0, x=x)
  stats = jpeg_layer.diagnose(auto, params, x)
  line, warn = jpeg_layer.diagnostic_message(stats, auto)
  assert not warn and stats["clipped_fraction"] == 0.0 and stats["psnr"] > 40


def test_no_clip_floor_keeps_every_coefficient_inside_the_window():
  x = jnp.concatenate([jnp.zeros((1, 8, 8, 3)), jnp.ones((1, 8, 8, 3)),
                       jax.random.uniform(jax.random.key(5), (2, 8, 8, 3))])
  layer, params = _layer_and_params(8, 0.13, x=x)
  luma, chroma = classification.STEP_FLOORS.get("no_clip")(
      layer, np.full((8, 8), 0.13, np.float32), np.full((8, 8), 0.13, np.float32))
  assert luma[0, 0] == pytest.approx(1024 / 127)
  floored = jpeg_layer.set_tables(params, luma, chroma)
  assert jpeg_layer.diagnose(layer, floored, x)["clipped_fraction"] == 0.0
  assert jpeg_layer.diagnose(layer, params, x)["clipped_fraction"] > 0.0


class _NoNorm(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(3)(x.mean((1, 2))), {}


class _WithNorm(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x))
    return nn.Dense(3)(nn.relu(x).mean((1, 2))), {}


def test_train_and_eval_mode_sensitivities_agree_without_batch_norm():
  x = jax.random.uniform(jax.random.key(6), (8, 16, 16, 3))
  y = np.arange(8) % 3
  batches = [(x, y)]
  for model, same in ((_NoNorm(), True), (_WithNorm(), False)):
    variables = model.init(jax.random.key(0), x)
    tables = [jpeg_table_recipes.sensitivity_tables(
        classification.logits_fn(model, variables, train_mode=mode), batches)
        for mode in (True, False)]
    if same:
      np.testing.assert_allclose(tables[0][0], tables[1][0], rtol=1e-5)
      np.testing.assert_allclose(tables[0][1], tables[1][1], rtol=1e-5)
    else:
      assert not np.allclose(tables[0][0], tables[1][0], rtol=1e-3)
