"""JPEG-DL layer: parameters, semantics, gradients, sharding, initialisations, export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from jaxcomp import config_lib, parallel
from jaxcomp.codecs import jpeg_files
from jaxcomp.codecs.jpeg import jpeg
from jaxcomp.layers import jpeg_layer, jpeg_table_recipes
from jaxcomp.layers.jpeg_layer import JpegLayer
from jaxcomp.ops import color, jpeg_dl_layer
from jaxcomp.ops.jpeg_tables import LUMA_TABLE, quality_tables
from jaxcomp.tasks import classification


@pytest.fixture(params=["cpp", "xla"])
def path(request, monkeypatch) -> str:
  """The layer's map by the C++ CPU kernel (`ops.jpeg_dl_layer`) or by XLA's ops."""
  if request.param == "xla":
    monkeypatch.setattr(jpeg_dl_layer, "available", lambda: False)
  elif not jpeg_dl_layer.available():
    pytest.skip("the C++ kernel could not be built here (ops.cpu_kernels warned why)")
  else:   # conftest's 8 CPU devices would keep XLA's formulation
    monkeypatch.setattr(jpeg_dl_layer, "KERNEL_ON_MULTI_DEVICE_CPU", True)
  return request.param


def images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize("kwargs,per_round", [
    (dict(), 128), (dict(num_channels=1), 64), (dict(alpha_mode="trainable"), 256),
    (dict(alpha_mode="hardness_matching"), 128)])
@pytest.mark.parametrize("rounds", [1, 3])
def test_trainable_parameter_count(kwargs, per_round, rounds):
  layer = JpegLayer(rounds=rounds, **kwargs)
  x = images((1, 8, 8, kwargs.get("num_channels", 3)))
  params = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
  assert count(params) == per_round * rounds          # the article: 128 per round
  assert sorted(params) == [f"round_{r}" for r in range(rounds)]


def test_from_config_and_initial_tables():
  cfg = config_lib.jpeg_layer_config()
  cfg.quality, cfg.quality_divisor, cfg.rounds = 50, 2.0, 2
  layer = classification.build_jpeg_layer(cfg, 3)
  assert (layer.rounds, layer.alpha, layer.alpha_mode, layer.num_candidates, layer.bits) == (
      2, cfg.alpha, cfg.alpha_mode, cfg.num_candidates, cfg.bits)
  params = layer.init(jax.random.key(0), images((1, 8, 8, 3)))["params"]
  np.testing.assert_allclose(params["round_1"]["luma_q"], LUMA_TABLE / 2.0)
  np.testing.assert_allclose(params["round_0"]["chroma_q"], quality_tables(50)[1] / 2.0)
  explicit = JpegLayer(init_tables=(np.full((8, 8), 3.0), np.full((8, 8), 7.0)))
  p = explicit.init(jax.random.key(0), images((1, 8, 8, 3)))["params"]["round_0"]
  np.testing.assert_array_equal(p["luma_q"], 3.0)
  np.testing.assert_array_equal(p["chroma_q"], 7.0)
  cfg.init = "random"
  with pytest.raises(ValueError, match="init"):
    classification.build_jpeg_layer(cfg, 3)


def test_hard_limit_is_jpeg_dl_pipeline_without_output_clamp(path):
  """alpha -> inf: round(z / q) q with the 8-bit index clamp, then the exact inverse."""
  x = images((2, 21, 35, 3))
  layer = JpegLayer(quality=30, alpha=1e4)
  variables = layer.init(jax.random.key(0), x)
  out = jax.jit(layer.apply)(variables, x)
  # Written out from JPEG_DL.md: 255x - 128, YCbCr with +0.5 chroma, zero padding, DCT.
  v = color.rgb_to_ycbcr(x * 255.0 - 128.0, offset=0.5)
  planes = jnp.pad(jnp.moveaxis(v, -1, 0), ((0, 0), (0, 0), (0, 3), (0, 5)))
  blocks = planes.reshape(3, 2, 3, 8, 5, 8).transpose(0, 1, 2, 4, 3, 5)
  z = scipy.fft.dctn(np.asarray(blocks, np.float64), axes=(-2, -1), norm="ortho")
  luma, chroma = quality_tables(30)
  q = np.stack([luma, chroma, chroma])[:, None, None, None]
  zq = np.clip(np.round(z / q), -127, 127) * q
  rec = scipy.fft.idctn(zq, axes=(-2, -1), norm="ortho").transpose(0, 1, 2, 4, 3, 5)
  rec = np.moveaxis(rec.reshape(3, 2, 24, 40)[:, :, :21, :35], 0, -1)
  expected = (np.asarray(color.ycbcr_to_rgb(jnp.asarray(rec, jnp.float32), offset=0.5)) + 128) / 255
  # float32 pipeline vs float64 reference: ~1e-5; a coefficient within 1e-3 of a rounding
  # tie could flip, which random data of this size does not hit.
  np.testing.assert_allclose(out, expected, atol=2e-4)
  # No output clamp: a hard-edged image rings past [0, 1] at strong quantization.
  edges = jnp.tile(jnp.asarray([0.0, 1.0]).repeat(4), 4)[None, None, :, None]
  edges = jnp.broadcast_to(edges, (1, 8, 32, 3))
  strong = JpegLayer(quality=5, alpha=1e4)
  ring = strong.apply(strong.init(jax.random.key(0), edges), edges)
  assert float(ring.min()) < 0.0 or float(ring.max()) > 1.0


def test_steps_are_clamped_before_the_forward_pass(path):
  x = images((1, 8, 8, 3))
  layer = JpegLayer(alpha=1e-5)       # alpha q**2 ~ 0.7 at q = 255: soft, nonzero gradients
  params = layer.init(jax.random.key(0), x)["params"]
  big = jpeg_layer.set_tables(params, np.full((8, 8), 1000.0), np.full((8, 8), 255.0))
  at_max = jpeg_layer.set_tables(params, np.full((8, 8), 255.0), np.full((8, 8), 255.0))
  apply = jax.jit(lambda p: layer.apply({"params": p}, x))
  np.testing.assert_array_equal(apply(big), apply(at_max))
  # Straight-through clamp: the gradient is the one at the clamped value, not zero.
  g_big = jax.jit(jax.grad(lambda p: apply(p).sum()))(big)["round_0"]["luma_q"]
  g_max = jax.jit(jax.grad(lambda p: apply(p).sum()))(at_max)["round_0"]["luma_q"]
  np.testing.assert_allclose(g_big, g_max)
  assert float(jnp.abs(g_big).sum()) > 0
  projected = jpeg_layer.project_params(
      jpeg_layer.set_tables(params, np.full((8, 8), -1.0), np.full((8, 8), 300.0)), q_min=0.5)
  np.testing.assert_array_equal(projected["round_0"]["luma_q"], 0.5)
  np.testing.assert_array_equal(projected["round_0"]["chroma_q"], 255.0)


def test_finite_difference_gradient_wrt_tables():
  """Central differences in float64 for a few table entries of each round."""
  x = images((1, 8, 16, 3), seed=3)
  layer = JpegLayer(rounds=2, quality=80, alpha=0.02)
  w = images((1, 8, 16, 3), seed=4)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64),
                          layer.init(jax.random.key(0), x)["params"])
    x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
    loss = jax.jit(lambda p: jnp.sum(layer.apply({"params": p}, x64) * w64))
    grads = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x64) * w64)))(params)
    eps = 1e-6
    for r, name, (u, v) in [(0, "luma_q", (0, 0)), (0, "luma_q", (1, 2)), (0, "chroma_q", (0, 1)),
                            (1, "luma_q", (0, 0)), (1, "chroma_q", (2, 2))]:
      def shifted(delta):
        p = jax.tree.map(lambda a: a, params)
        p[f"round_{r}"] = dict(p[f"round_{r}"])
        p[f"round_{r}"][name] = p[f"round_{r}"][name].at[u, v].add(delta)
        return loss(p)
      fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
      g = grads[f"round_{r}"][name][u, v]
      # alpha q**2 ~ 0.02 * 10**2 keeps the weights soft and the candidate jumps far
      # below eps-level; float64 rounding error ~ 1e-16 * |loss| / eps ~ 1e-9.
      np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-7)
      assert abs(float(g)) > 1e-6                     # a real gradient, not a zero
    # The image gradient goes through the custom VJPs of the colour/DCT transforms.
    loss_x = jax.jit(lambda x: jnp.sum(layer.apply({"params": params}, x) * w64))
    g_x = jax.jit(jax.grad(lambda x: jnp.sum(layer.apply({"params": params}, x) * w64)))(x64)
    for idx in [(0, 0, 0, 0), (0, 3, 9, 1), (0, 7, 15, 2)]:
      fd = (loss_x(x64.at[idx].add(eps)) - loss_x(x64.at[idx].add(-eps))) / (2 * eps)
      np.testing.assert_allclose(g_x[idx], fd, rtol=1e-4, atol=1e-7)


def test_jit_vmap_grad(path):
  layer = JpegLayer(alpha=0.1)
  x = images((3, 2, 16, 16, 3))
  variables = layer.init(jax.random.key(0), x[0])
  batched = jax.jit(jax.vmap(lambda xb: layer.apply(variables, xb)))(x)
  flat = layer.apply(variables, x.reshape(6, 16, 16, 3))
  np.testing.assert_allclose(batched.reshape(flat.shape), flat, atol=1e-5)
  g_params, g_x = jax.jit(jax.grad(lambda v, x: jnp.sum(layer.apply(v, x) ** 2), argnums=(0, 1)))(
      variables, x[0])
  assert g_x.shape == x[0].shape and bool(jnp.all(jnp.isfinite(g_x)))
  assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(g_params))


def test_band_loop_does_not_change_the_result(path):
  x = images((4, 40, 24, 3))                      # 5 block rows: bands of 1 row, one pass
  outs = []
  for band_size in (1, None):
    layer = JpegLayer(rounds=2, alpha=0.3, band_size=band_size)
    variables = layer.init(jax.random.key(0), x)
    outs.append(jax.jit(jax.value_and_grad(
        lambda v, x: jnp.sum(layer.apply(v, x) ** 2), argnums=(0, 1)))(variables, x))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), *outs)


def test_sharded_batch_matches_unsharded():
  mesh = parallel.create_mesh()
  assert mesh.devices.size == 8                        # conftest's fake CPU devices
  layer = JpegLayer(rounds=2, alpha=0.1)
  x = images((16, 16, 24, 3))
  variables = layer.init(jax.random.key(0), x[:1])

  def step(v, x):
    return jax.value_and_grad(lambda v: jnp.mean(layer.apply(v, x) ** 2))(v)

  loss, grads = jax.jit(step)(variables, x)
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  loss_s, grads_s = jax.jit(step)(vs, xs)
  assert len(xs.sharding.device_set) == 8
  np.testing.assert_allclose(loss_s, loss, rtol=1e-6)
  # Sums over 8 shards vs one: float32 reassociation, and the coefficients within a
  # rounding error of a quantizer boundary (where the soft quantizer's derivative
  # peaks) that land on the other side of it: up to ~0.4 % of a table's largest
  # gradient here. A shard missing from the sum would be off by ~1/8 of it.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=0, atol=1e-2 * float(np.max(np.abs(b)))), grads_s, grads)


def test_grey_layer_is_luma_only(path):
  layer = JpegLayer(num_channels=1, quality=50, alpha=1e4)
  x = images((2, 24, 16, 1))
  variables = layer.init(jax.random.key(0), x)
  out = jax.jit(layer.apply)(variables, x)
  assert out.shape == x.shape
  # The grey plane 255 x - 128 is quantized with the luma table (hard limit).
  z = _reference_dct_blocks(np.asarray(x[..., 0], np.float64) * 255 - 128)
  zq = np.round(z / quality_tables(50)[0]) * quality_tables(50)[0]
  rec = scipy.fft.idctn(zq, axes=(-2, -1), norm="ortho").swapaxes(-3, -2).reshape(2, 24, 16)
  np.testing.assert_allclose(out[..., 0], (rec + 128) / 255, atol=2e-5)


def _reference_dct_blocks(planes: np.ndarray) -> np.ndarray:
  """[..., H, W] (multiples of 8) -> [..., nh, nw, 8, 8] with scipy's orthonormal DCT."""
  *lead, h, w = planes.shape
  b = planes.reshape(*lead, h // 8, 8, w // 8, 8).swapaxes(-3, -2)
  return scipy.fft.dctn(b, axes=(-2, -1), norm="ortho")


def test_sensitivity_tables_match_an_independent_computation():
  rng = np.random.default_rng(0)
  weights = rng.normal(size=(16 * 16 * 3, 5))
  batches = [(rng.uniform(size=(4, 16, 16, 3)).astype(np.float32), rng.integers(0, 5, 4))
             for _ in range(2)]
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.asarray(weights, x.dtype)
  luma, chroma = jpeg_table_recipes.sensitivity_tables(logits_fn, batches, q_max=10.0)
  # By hand (float64): d CE_mean / d x = (softmax - onehot) W^T / B; the layer's output is
  # (M^-1 (ycc - offset) + 128) / 255, so d/d ycc = M^-T (d/d x) / 255; ycc = IDCT(z)
  # blockwise, so d/d z = DCT(d/d ycc).
  s = np.zeros((3, 8, 8))
  for x, y in batches:
    logits = x.reshape(4, -1).astype(np.float64) @ weights
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g_x = ((p - np.eye(5)[y]) @ weights.T / 4).reshape(x.shape)
    g_ycc = np.einsum("kc,bhwk->cbhw", color.YCBCR_TO_RGB, g_x) / 255.0
    s += (_reference_dct_blocks(g_ycc) ** 2).sum(axis=(1, 2, 3))
  s /= 8
  ref_luma, ref_chroma = 1 / s[0], 2 / (s[1] + s[2])
  factor = ref_luma.max() / 10.0
  np.testing.assert_allclose(luma, np.minimum(ref_luma / factor, 255), rtol=1e-3)
  np.testing.assert_allclose(chroma, np.minimum(ref_chroma / factor, 255), rtol=1e-3)
  assert luma.max() == pytest.approx(10.0)             # largest luma step = q_max
  # A luma-only classifier leaves chroma insensitive: the steps saturate at 255.
  luma_of = lambda x: (x @ jnp.asarray([.299, .587, .114], x.dtype))[..., None]
  grey_logits = lambda x: logits_fn(jnp.repeat(luma_of(x), 3, axis=-1))
  _, chroma_free = jpeg_table_recipes.sensitivity_tables(grey_logits, batches, q_max=10.0)
  np.testing.assert_array_equal(chroma_free, 255.0)


def test_lsq_tables_match_an_independent_computation():
  x = np.random.default_rng(1).uniform(size=(3, 12, 20, 3))
  luma, chroma = jpeg_table_recipes.lsq_tables(jnp.asarray(x, jnp.float32), bits=8)
  ycc = x * 255 - 128
  ycc = ycc @ color.RGB_TO_YCBCR.T + [0.0, 0.5, 0.5]
  planes = np.pad(np.moveaxis(ycc, -1, 0), ((0, 0), (0, 0), (0, 4), (0, 4)))   # zeros
  z = np.abs(_reference_dct_blocks(planes))
  scale = 2 / np.sqrt(2 ** 7)
  np.testing.assert_allclose(luma, scale * z[0].mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(chroma, scale * z[1:].mean(axis=(0, 1, 2, 3)), rtol=1e-4, atol=1e-4)


def test_set_tables_replaces_every_round_and_copies():
  layer = JpegLayer(rounds=2)
  params = layer.init(jax.random.key(0), images((1, 8, 8, 3)))["params"]
  new = jpeg_layer.set_tables(params, np.full((8, 8), 2.0), np.full((8, 8), 3.0))
  for r in ("round_0", "round_1"):
    np.testing.assert_array_equal(new[r]["luma_q"], 2.0)
    np.testing.assert_array_equal(new[r]["chroma_q"], 3.0)
  np.testing.assert_allclose(params["round_0"]["luma_q"], quality_tables(50)[0])   # untouched
  only_second = jpeg_layer.set_tables(params, np.ones((8, 8)), np.ones((8, 8)), rounds=[1])
  np.testing.assert_allclose(only_second["round_0"]["luma_q"], quality_tables(50)[0])
  with pytest.raises(ValueError, match="chroma"):
    jpeg_layer.set_tables(params, np.ones((8, 8)))


def test_exported_tables_make_standard_files_matching_the_hard_path(shared_data):
  crop = np.asarray(Image.open(shared_data / "kodak" / "kodim23.png").convert("RGB"))[
      100:228, 200:392]
  layer = JpegLayer()
  params = layer.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  # "Trained" tables: non-integer, one entry below 1, one above 255.
  luma = quality_tables(40)[0] * 1.37 + 0.3
  luma[0, 1], luma[7, 7] = 0.2, 300.0
  chroma = quality_tables(60)[1] * 0.81
  params = jpeg_layer.set_tables(params, luma, chroma)
  ex_luma, ex_chroma = jpeg_table_recipes.export_tables(params)
  assert ex_luma.dtype == np.int32 and ex_luma[0, 1] == 1 and ex_luma[7, 7] == 255
  np.testing.assert_array_equal(ex_luma[1:, :6], np.round(luma[1:, :6]))
  data = jpeg_files.encode_jpeg(crop, qtables=(ex_luma, ex_chroma), subsampling="4:4:4")
  file_luma, file_chroma = jpeg_files.quantization_tables(data)      # the file carries them
  np.testing.assert_array_equal(file_luma, ex_luma)
  np.testing.assert_array_equal(file_chroma, ex_chroma)
  decoded = jpeg_files.decode_jpeg(data)
  hard = np.asarray(jax.jit(lambda x: jpeg(x, tables=(ex_luma, ex_chroma), quantizer="hard",
                                           subsampling="4:4:4"))(jnp.asarray(crop[None])))[0]
  mse = np.mean((decoded.astype(np.float64) - hard) ** 2)
  assert 10 * np.log10(255 ** 2 / mse) >= 40.0
  grey = JpegLayer(num_channels=1).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  assert jpeg_table_recipes.export_tables(grey)[1] is None


@pytest.mark.parametrize("layer,x,match", [
    (JpegLayer(), jnp.zeros((1, 8, 8, 4)), "images"),
    (JpegLayer(), jnp.zeros((8, 8, 3)), "images"),
    (JpegLayer(num_channels=1), jnp.zeros((1, 8, 8, 3)), "images"),
    (JpegLayer(), jnp.zeros((1, 8, 8, 3), jnp.uint8), "float"),
    (JpegLayer(alpha_mode="learned"), jnp.zeros((1, 8, 8, 3)), "alpha_mode"),
    (JpegLayer(num_channels=2), jnp.zeros((1, 8, 8, 2)), "num_channels"),
])
def test_bad_input_is_a_clear_error(layer, x, match):
  with pytest.raises(ValueError, match=match):
    layer.init(jax.random.key(0), x)
