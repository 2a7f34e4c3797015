"""The Haar-shrinkage C++ CPU kernel (pixel moves + wavelet denoising) against
scikit-image, the XLA formulation and finite differences."""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data
from skimage.restoration import denoise_wavelet as sk_denoise_wavelet

from jaxcomp.defenses import denoise_wavelet, pd_rcam_dwt
from jaxcomp.defenses.pixel_deflection import draw, moves, move_pixels
from jaxcomp.defenses.wavelet import denoise_moved
from jaxcomp.ops import haar_shrink


@pytest.fixture(autouse=True)
def kernel(monkeypatch):
  if not haar_shrink.available():
    pytest.skip("the C++ kernel could not be built here (ops.cpu_kernels warned why)")
  # conftest's 8 CPU devices would keep the XLA formulation (KERNEL_ON_MULTI_DEVICE_CPU).
  monkeypatch.setattr(haar_shrink, "KERNEL_ON_MULTI_DEVICE_CPU", True)


def _xla(fn, **kwargs):
  """`fn` (its keywords bound) traced with the kernel unavailable: XLA's formulation."""
  def run(*args):
    available = haar_shrink.available
    haar_shrink.available = lambda: False
    try:
      return jax.jit(functools.partial(fn, **kwargs))(*args)
    finally:
      haar_shrink.available = available
  return run


def _uses_kernel(fn, *args) -> bool:
  return "JaxcompHaarShrink" in jax.jit(lambda *a: fn(*a)).lower(*args).as_text()   # traced anew


@pytest.fixture(scope="module")
def images() -> np.ndarray:
  """[4, 40, 36, 3] float32: a noisy astronaut crop, uniform noise, a grey image (Cb, Cr
  constant: left as they are) and the clean crop. 36 columns: the kernel's vector loops
  (8 pixels, 8 coefficient pairs) and their scalar tails both run."""
  rng = np.random.default_rng(0)
  ast = data.astronaut()[100:260:4, 180:324:4] / 255.0
  noisy = np.clip(ast + 0.05 * rng.standard_normal(ast.shape), 0, 1)
  grey = np.repeat(noisy.mean(-1, keepdims=True), 3, -1)
  return np.stack([noisy, rng.random(ast.shape), grey, ast]).astype(np.float32)


SETTINGS = [
    dict(sigma=0.04),                                         # Table 4.1
    dict(sigma=4.0, rescale_sigma=False),
    dict(sigma=0.04, mode="hard", wavelet_levels=3),          # 40 x 36 at 3 levels: not 2^3 | 36
    dict(sigma=0.04, mode="hard", wavelet_levels=1),
    dict(method="VisuShrink", sigma=0.04),
    dict(convert2ycbcr=False, sigma=0.1),
    dict(convert2ycbcr=False, sigma=(0.05, 0.1, 0.2), mode="hard", wavelet="haar"),
]


@pytest.mark.parametrize("kwargs", SETTINGS)
def test_matches_skimage_and_the_xla_formulation(images, kwargs):
  """Against skimage (float64 inside, on the float32 pixels) to 1e-4, as the XLA
  formulation is tested (tests/defenses/wavelet_test.py); against that formulation
  to 1e-5 (measured ~1e-6: float32 rounding in a different order)."""
  kw = dict(wavelet="db1", mode="soft", convert2ycbcr=True, method="BayesShrink",
            rescale_sigma=True) | kwargs
  fn = functools.partial(denoise_wavelet, **kw)
  levels = kw.get("wavelet_levels") or 2
  assert _uses_kernel(fn, images) == (36 % 2 ** levels == 0)
  got = jax.jit(fn)(images)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ref = np.stack([sk_denoise_wavelet(im, channel_axis=-1, **kw) for im in images])
  assert np.abs(ref - images).max() > 1e-3
  np.testing.assert_allclose(got, ref, atol=1e-4)
  np.testing.assert_allclose(got, _xla(denoise_wavelet, **kw)(images), atol=1e-5)


def _moves(b, h, w, k, seed):
  """[b, k] moves with repeated destinations, vetoed ones (dest = H W), negatives and
  sources out of range (both skip the move)."""
  rng = np.random.default_rng(seed)
  dest = rng.integers(0, h * w // 8, (b, k))            # few pixels: many repeats
  dest[:, ::7] = h * w
  dest[:, 3::11] = -5
  src = rng.integers(0, h * w, (b, k))
  src[:, 5::13] = h * w + 3
  return jnp.asarray(dest, jnp.int32), jnp.asarray(src, jnp.int32)


@pytest.mark.parametrize("clip", [False, True])
def test_moves_then_shrinkage_equals_the_xla_formulation(images, clip):
  b, h, w, _ = images.shape
  dest, src = _moves(b, h, w, 60, seed=1)
  kw = dict(sigma=0.04, wavelet="db1", mode="soft", wavelet_levels=None, convert2ycbcr=True,
            method="BayesShrink", rescale_sigma=True, clip=clip, chunk_bytes=None)
  fn = functools.partial(denoise_moved, **kw)
  assert _uses_kernel(fn, images, dest, src)
  got = jax.jit(fn)(images, dest, src)
  want = _xla(denoise_moved, **kw)(images, dest, src)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # The moves matter: without them the result differs.
  none = jnp.full_like(dest, h * w)
  assert np.abs(np.asarray(jax.jit(fn)(images, none, src)) - np.asarray(got)).max() > 1e-3
  if clip:
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0


def test_the_defense_runs_the_kernel_and_equals_xla(images):
  x = jnp.asarray(images)
  rcam = jax.random.uniform(jax.random.key(3), x.shape[:3])
  fn = functools.partial(pd_rcam_dwt, deflections=100, window=5)
  assert _uses_kernel(fn, x, jax.random.key(0))
  for r in (None, rcam):
    got = jax.jit(fn)(x, jax.random.key(0), rcam=r)
    want = _xla(pd_rcam_dwt, deflections=100, window=5, rcam=r)(x, jax.random.key(0))
    np.testing.assert_allclose(got, want, atol=1e-5)
  # Moves and shrinkage together: the draws' moves, then denoise_wavelet, then the clip.
  h, w = x.shape[1:3]
  dest, src = moves(draw(jax.random.key(0), 4, 100), None, height=h, width=w, window=5)
  moved = move_pixels(x, dest, src)
  np.testing.assert_allclose(jax.jit(fn)(x, jax.random.key(0)),
                             jnp.clip(jax.jit(functools.partial(denoise_wavelet, sigma=0.04))(
                                 moved), 0, 1), atol=1e-5)


def test_gradient_is_the_xla_formulations_and_matches_finite_differences(images):
  """The kernel's VJP is XLA's formulation's (the same gradient to float32 rounding),
  and central differences of that formulation in float64 agree with it (eps 1e-6: the
  soft threshold's kinks and the planes' min / max make the map piecewise smooth at
  the scale of ~1e-3; in float32 the differences drift from the slope by 2-17 % for
  eps from 1e-5 to 1e-3, XLA's and the kernel's alike). The kernel's forward pass
  has the differences of XLA's at eps = 1e-3 (the same kinks crossed; measured 2e-4
  apart)."""
  x = jnp.asarray(images[:2])
  b, h, w, _ = x.shape
  dest, src = _moves(b, h, w, 30, seed=2)
  weights = jax.random.normal(jax.random.key(1), x.shape)
  direction = jax.random.normal(jax.random.key(2), x.shape)
  kw = dict(sigma=0.04, wavelet="db1", mode="soft", wavelet_levels=None, convert2ycbcr=True,
            method="BayesShrink", rescale_sigma=True, clip=False, chunk_bytes=None)
  loss = lambda x: jnp.sum(denoise_moved(x, dest, src, **kw) * weights.astype(x.dtype))
  g = jax.jit(jax.grad(loss))(x)
  np.testing.assert_allclose(g, _xla(jax.grad(loss))(x), atol=1e-5)
  slope = float(jnp.vdot(g, direction))
  assert abs(slope) > 1.0
  central = lambda f, x, d, eps: (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
  with jax.enable_x64(True):
    x64, d64 = jnp.asarray(x, jnp.float64), jnp.asarray(direction, jnp.float64)
    g64 = _xla(jax.grad(loss))(x64)
    np.testing.assert_allclose(central(_xla(loss), x64, d64, 1e-6), jnp.vdot(g64, d64),
                               rtol=1e-6)
    np.testing.assert_allclose(slope, jnp.vdot(g64, d64), rtol=1e-4)
  np.testing.assert_allclose(central(jax.jit(loss), x, direction, 1e-3),
                             central(_xla(loss), x, direction, 1e-3), rtol=2e-3)


def test_platform_switch_and_fallbacks(images, monkeypatch):
  x = jnp.asarray(images)
  fn = functools.partial(denoise_wavelet, sigma=0.04)
  assert _uses_kernel(fn, x)
  assert not _uses_kernel(functools.partial(denoise_wavelet), x)          # sigma estimated
  assert not _uses_kernel(functools.partial(denoise_wavelet, sigma=0.04, wavelet="db2"), x)
  assert not _uses_kernel(fn, x[:, :38, :34])                              # 34 % 4 != 0
  with jax.enable_x64(True):
    assert not _uses_kernel(fn, jnp.asarray(x, jnp.float64))
  monkeypatch.setattr(haar_shrink, "KERNEL_ON_MULTI_DEVICE_CPU", False)
  assert not _uses_kernel(fn, x)                                           # conftest's 8 devices
  monkeypatch.setattr(haar_shrink, "KERNEL_ON_MULTI_DEVICE_CPU", True)
  # Lowered for another platform, the XLA formulation is chosen.
  exported = jax.export.export(jax.jit(fn), platforms=["cuda"])(x)
  assert "HaarShrink" not in exported.mlir_module()


def test_vmap_and_repeated_calls_agree(images):
  x = jnp.asarray(images)
  fn = jax.jit(functools.partial(pd_rcam_dwt, deflections=50, window=3))
  np.testing.assert_array_equal(fn(x, jax.random.key(5)), fn(x, jax.random.key(5)))
  single = jax.jit(functools.partial(denoise_wavelet, sigma=0.04))
  mapped = jax.jit(jax.vmap(single))(x.reshape(2, 2, *x.shape[1:]))
  np.testing.assert_array_equal(mapped.reshape(x.shape), single(x))


def test_bad_input_is_a_clear_error(images):
  x = jnp.asarray(images)
  config = haar_shrink.Shrinkage(sigma=(0.1,) * 3, levels=3, ycbcr=False,
                                 colour=tuple(np.eye(3).ravel()), offset=(0.0,) * 3,
                                 method="BayesShrink", mode="soft", clip=False)
  empty = jnp.zeros((4, 0), jnp.int32)
  with pytest.raises(ValueError, match="does not take images"):
    haar_shrink.apply(x, empty, empty, config, lambda *a: a[0])          # 36 % 8 != 0
  config = dataclasses.replace(config, levels=2)
  with pytest.raises(ValueError, match=r"dest and src must be \[B, K\]"):
    haar_shrink.apply(x, empty, jnp.zeros((4, 1), jnp.int32), config, lambda *a: a[0])

