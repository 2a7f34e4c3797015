"""Tests of jaxcomp.metrics against skimage (SSIM), pytorch-msssim 1.0 golden values and a
float64 numpy MS-SSIM reference (Eq. 7 of Wang, Simoncelli, Bovik 2003), PSNR-S and luma 4:2:0."""

from __future__ import annotations

import functools
import hashlib
import io
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import signal
from skimage.metrics import structural_similarity

from jaxcomp import metrics


@pytest.fixture(scope="module")
def pair(shared_data):
  """A 192x256 Kodak crop and a noisy, blurred version of it, float in [0, 1]."""
  x = np.asarray(Image.open(shared_data / "kodak" / "kodim05.png"), np.float64)[:192, :256] / 255
  rng = np.random.default_rng(0)
  y = np.clip(0.5 * x + 0.25 * np.roll(x, 1, axis=0) + 0.25 * np.roll(x, 1, axis=1)
              + rng.normal(0, 0.05, x.shape), 0, 1)
  return x, y


def _ref_terms(x, y, max_val=1.0):
  """SSIM and CS maps' means per channel, float64, from Wang et al. 2004 Eq. 13 (valid window)."""
  r = np.arange(11) - 5.0
  g = np.exp(-0.5 * (r / 1.5) ** 2)
  win = np.outer(g, g) / g.sum() ** 2
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  s_out, cs_out = [], []
  for c in range(x.shape[-1]):
    f = lambda a: signal.correlate2d(a, win, mode="valid")  # noqa: E731
    a, b = x[..., c], y[..., c]
    mx, my = f(a), f(b)
    vx, vy, cov = f(a * a) - mx ** 2, f(b * b) - my ** 2, f(a * b) - mx * my
    cs = (2 * cov + c2) / (vx + vy + c2)
    s_out.append(np.mean((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs))
    cs_out.append(np.mean(cs))
  return np.asarray(s_out), np.asarray(cs_out)


def _ref_ms_ssim(x, y):
  """MS-SSIM of Wang, Simoncelli, Bovik 2003 (Eq. 7), 5 scales, standard exponents."""
  w = np.asarray([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
  values = []
  for level in range(5):
    s, cs = _ref_terms(x, y)
    values.append(s if level == 4 else cs)
    h, wd = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :wd].reshape(h // 2, 2, wd // 2, 2, -1).mean(axis=(1, 3))
    y = y[:h, :wd].reshape(h // 2, 2, wd // 2, 2, -1).mean(axis=(1, 3))
  return np.mean(np.prod(np.maximum(np.stack(values), 0) ** w[:, None], axis=0))


def test_psnr_closed_form():
  x = jnp.zeros((2, 8, 8, 3))
  y = x.at[1].set(0.1)
  p = jax.jit(metrics.psnr)(x, y)
  assert p[0] == np.inf
  np.testing.assert_allclose(p[1], 20.0, rtol=1e-6)  # 10 log10(1 / 0.01)


def test_ssim_matches_skimage(pair):
  x, y = pair
  expected = structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, data_range=1.0, channel_axis=-1)
  got = jax.jit(metrics.ssim)(jnp.asarray(x[None], jnp.float32), jnp.asarray(y[None], jnp.float32))
  # float32 convolutions vs skimage's float64: agreement to ~1e-6 observed; 1e-5 allowed.
  np.testing.assert_allclose(got[0], expected, atol=1e-5)
  np.testing.assert_allclose(got[0], np.mean(_ref_terms(x, y)[0]), atol=1e-5)


def test_ms_ssim_matches_numpy_reference(pair):
  x, y = pair
  got = jax.jit(metrics.ms_ssim)(jnp.asarray(np.stack([x, y]), jnp.float32),
                                 jnp.asarray(np.stack([y, y]), jnp.float32))
  np.testing.assert_allclose(got[0], _ref_ms_ssim(x, y), atol=1e-5)   # float32 vs float64
  np.testing.assert_allclose(got[1], 1.0, atol=1e-6)                   # identical images


def test_ms_ssim_is_differentiable_and_checks_size(pair):
  x, y = (jnp.asarray(a[None], jnp.float32) for a in pair)
  g = jax.jit(jax.grad(lambda y: metrics.ms_ssim(x, y).sum()))(y)
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
  with pytest.raises(ValueError, match="above 160 pixels.*allows scales=4"):
    metrics.ms_ssim(x[:, :100], y[:, :100])


GOLDEN = pathlib.Path(__file__).parent / "data" / "ms_ssim_reference.npz"


def _jpeg_pair(path, crop, quality):
  """As benchmarks/ms_ssim_reference.py: uint8 original (cropped) and its Pillow JPEG 4:2:0."""
  x = np.asarray(Image.open(path).convert("RGB"))
  if crop is not None:
    top, left, h, w = crop
    x = np.ascontiguousarray(x[top:top + h, left:left + w])
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, "JPEG", quality=quality, subsampling=2)
  return x, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_ms_ssim_matches_pytorch_msssim(shared_data):
  """Golden values of pytorch-msssim 1.0 (float64) made by benchmarks/ms_ssim_reference.py."""
  ref = np.load(GOLDEN)
  by_shape = {}                      # one jitted call per image size
  for name, crop, quality, expected, digest in zip(ref["image"], ref["crop"], ref["quality"],
                                                    ref["ms_ssim"], ref["decoded_sha256"]):
    crop = tuple(int(c) for c in crop) if crop.any() else None
    x, y = _jpeg_pair(shared_data / "kodak" / str(name), crop, int(quality))
    assert hashlib.sha256(y.tobytes()).hexdigest() == digest, (
        f"Pillow decodes {name} q{quality} differently from the golden run ({ref['versions']})")
    by_shape.setdefault(x.shape, []).append((x, y, expected))
  fn = jax.jit(functools.partial(metrics.ms_ssim, max_val=255.0))
  for cases in by_shape.values():
    x, y, expected = (np.stack(a) for a in zip(*cases))
    got = fn(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    # float32 vs the reference's float64: |diff| <= 2e-6 observed over the 4 cases.
    np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"size {x.shape[1:3]}")


def test_ms_ssim_scales(pair):
  x, y = pair
  assert [metrics.ms_ssim_scales(s, 400) for s in (10, 11, 21, 32, 160, 161)] == [0, 1, 2, 2, 4, 5]
  xb, yb = jnp.asarray(x[None, :48, :64], jnp.float32), jnp.asarray(y[None, :48, :64], jnp.float32)
  ms = jax.jit(metrics.ms_ssim, static_argnames=("scales", "weights"))
  # scales=1: a single weight renormalised to 1, i.e. SSIM clipped at 0.
  np.testing.assert_allclose(ms(xb, yb, scales=1), jax.jit(metrics.ssim)(xb, yb), rtol=1e-6)
  # scales=len(weights) is the default, weights as given (3 weights for this 48x64 crop).
  np.testing.assert_allclose(ms(xb, yb, weights=(.2, .3, .5), scales=3),
                             ms(xb, yb, weights=(.2, .3, .5)), rtol=0)
  # 32x32: two scales, weights (.0448, .2856) / .3304, cs at scale 1 and SSIM at scale 2
  # (numpy float64 reference, Eq. 7 with the truncated, renormalised exponents).
  a, b = x[:32, :32], y[:32, :32]
  _, cs1 = _ref_terms(a, b)
  down = lambda im: im.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))  # noqa: E731
  s2, _ = _ref_terms(down(a), down(b))
  w = np.asarray([0.0448, 0.2856]) / 0.3304
  expected = np.mean(np.maximum(cs1, 0) ** w[0] * np.maximum(s2, 0) ** w[1])
  got = jax.jit(functools.partial(metrics.ms_ssim, scales=2))(
      jnp.asarray(a[None], jnp.float32), jnp.asarray(b[None], jnp.float32))
  np.testing.assert_allclose(got[0], expected, atol=1e-5)
  with pytest.raises(ValueError, match="allows scales=2"):
    metrics.ms_ssim(jnp.asarray(a[None]), jnp.asarray(b[None]))
  with pytest.raises(ValueError, match="scales must be"):
    metrics.ms_ssim(xb, yb, scales=4, weights=(.2, .3, .5))


def test_odd_downsample_is_zero_padded_average_pool():
  # pytorch's avg_pool2d(kernel_size=2, padding=1) on a 3x3 ramp: one zero row/column in front.
  x = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
  expected = np.asarray([[1 / 4, (2 + 3) / 4], [(4 + 7) / 4, (5 + 6 + 8 + 9) / 4]])
  np.testing.assert_allclose(metrics._downsample(x)[0, ..., 0], expected, rtol=1e-6)


@pytest.mark.parametrize("space", ["rgb", "luma"])
def test_ssim_matches_skimage_on_jpeg(shared_data, space):
  """A whole Kodak image vs its JPEG q10, [0, 255] values, on RGB and on luma 4:2:0."""
  x, y = (jnp.asarray(a[None], jnp.float32)
          for a in _jpeg_pair(shared_data / "kodak" / "kodim01.png", None, 10))
  if space == "luma":
    x, y = metrics.luma_420(x, max_val=255.0), metrics.luma_420(y, max_val=255.0)
  expected = structural_similarity(np.asarray(x[0], np.float64), np.asarray(y[0], np.float64),
                                   gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   data_range=255.0, channel_axis=-1)
  got = jax.jit(functools.partial(metrics.ssim, max_val=255.0))(x, y)
  # float32 vs skimage's float64: |diff| ~1.7e-6 (RGB), 1.4e-6 (luma) observed; 1e-5 allowed.
  np.testing.assert_allclose(got[0], expected, atol=1e-5)


def test_psnr_s():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(2, 16, 24, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
  mask = np.zeros((2, 16, 24), bool)
  mask[0, 4:10, 3:20] = True
  mask[1] = True
  got = jax.jit(metrics.psnr_s)(x, y, mask)
  # Hand computation: PSNR of the masked pixels only (all channels).
  mse0 = np.mean((x[0][mask[0]].astype(np.float64) - y[0][mask[0]]) ** 2)
  np.testing.assert_allclose(got[0], 10 * np.log10(1 / mse0), rtol=1e-5)
  np.testing.assert_allclose(got[1], metrics.psnr(x, y)[1], rtol=1e-5)   # whole image
  # Float weights: a weighted MSE; uniform weights are the plain PSNR.
  np.testing.assert_allclose(metrics.psnr_s(x, y, 0.3 * np.ones((2, 16, 24))),
                             metrics.psnr(x, y), rtol=1e-5)
  assert np.isnan(metrics.psnr_s(x, y, np.zeros((2, 16, 24), bool))).all()
  with pytest.raises(ValueError, match="mask must be"):
    metrics.psnr_s(x, y, mask[:, :8])


def test_luma_420():
  rgb = np.zeros((1, 40, 50, 3), np.float32)
  rgb[0, :, 25:] = 1.0                              # white on the right
  rgb[0, 0, 0] = (1.0, 0.0, 0.0)                    # one pure red pixel
  y = jax.jit(metrics.luma_420)(rgb)
  assert y.shape == (1, 32, 48, 1)                  # cropped to multiples of 16
  # BT.601 studio range: black 16, white 235, red round(16 + 219 * .299) = 81 (of 255).
  np.testing.assert_allclose(y[0, 5, 5, 0] * 255, 16, atol=1e-4)
  np.testing.assert_allclose(y[0, 5, 30, 0] * 255, 235, atol=1e-4)
  np.testing.assert_allclose(y[0, 0, 0, 0] * 255, 81, atol=1e-4)
  np.testing.assert_allclose(metrics.luma_420(rgb * 255, max_val=255.0), y * 255, atol=1e-4)
  with pytest.raises(ValueError, match="luma_420"):
    metrics.luma_420(rgb[..., :2])


def test_bd_rate():
  # A curve needing exactly half the rate at every PSNR: BD-rate -50 % (definition).
  psnr = np.asarray([26.0, 28.0, 30.0, 32.0])
  rate = np.asarray([0.2, 0.3, 0.5, 0.8])
  np.testing.assert_allclose(metrics.bd_rate(rate, psnr, rate / 2, psnr), -50.0, atol=1e-9)
  np.testing.assert_allclose(metrics.bd_rate(rate, psnr, rate, psnr), 0.0, atol=1e-9)
  with pytest.raises(ValueError, match="overlap"):
    metrics.bd_rate(rate, psnr, rate, psnr + 10)
