"""Tests of jaxcomp.metrics against skimage (SSIM) and a float64 numpy MS-SSIM reference."""

from __future__ import annotations

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
  with pytest.raises(ValueError, match="176"):
    metrics.ms_ssim(x[:, :100], y[:, :100])


def test_bd_rate():
  # A curve needing exactly half the rate at every PSNR: BD-rate -50 % (definition).
  psnr = np.asarray([26.0, 28.0, 30.0, 32.0])
  rate = np.asarray([0.2, 0.3, 0.5, 0.8])
  np.testing.assert_allclose(metrics.bd_rate(rate, psnr, rate / 2, psnr), -50.0, atol=1e-9)
  np.testing.assert_allclose(metrics.bd_rate(rate, psnr, rate, psnr), 0.0, atol=1e-9)
  with pytest.raises(ValueError, match="overlap"):
    metrics.bd_rate(rate, psnr, rate, psnr + 10)
