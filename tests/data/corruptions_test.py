"""CIFAR-10-C style corruptions against scipy, scikit-image, OpenCV and hand values.

References: the constants and recipes of hendrycks/robustness `make_cifar_c.py`
(REFERENCE_CODE.md Sec. A); `skimage.color.rgb2hsv`/`hsv2rgb`;
`scipy.ndimage.gaussian_filter` and `zoom`; `cv2.resize`. Our arithmetic is float32
and the original's float64, so where the exact value is an integer, truncation
may give it or one less in either (the original gives 172 for 172.99999999999997):
the uint8 comparisons allow exactly that and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import io
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.color
from PIL import Image

from jaxcomp.data import corruptions

RANDOM = ("gaussian_noise", "speckle_noise", "impulse_noise", "fog", "frost", "snow")


@pytest.fixture(scope="module")
def images(shared_data) -> np.ndarray:
  """The first 8 CIFAR-10 (JPEG q75) test images in file-name order, uint8 [8, 32, 32, 3]."""
  with zipfile.ZipFile(shared_data / "cifar10_jpeg75.zip") as z:
    files = sorted(n for n in z.namelist() if n.startswith("test/") and n.endswith(".jpg"))
    return np.stack([np.asarray(Image.open(io.BytesIO(z.read(f))).convert("RGB"))
                     for f in files[:8]])


def _truncated(values: np.ndarray, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
  """The range a float32 truncation of exact `values` (in [0, 255]) may give: floor,
  or one less where the value is within `tol` of an integer."""
  hi = np.floor(values + tol)
  return hi - (np.abs(values - np.round(values)) < tol), hi


def _assert_truncation_of(got: np.ndarray, want: np.ndarray) -> None:
  """`got` (uint8) is `want` (float64 in [0, 1], the original's arithmetic) times 255
  truncated, up to the float32-vs-float64 coin flip at exact integers."""
  lo, hi = _truncated(np.clip(want, 0, 1) * 255, tol=1e-4)
  bad = (got < lo) | (got > hi)
  assert not bad.any(), (np.argwhere(bad)[:5], got[bad][:5], want[bad][:5] * 255)


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_every_severity_keeps_shape_and_dtype_and_changes_the_images(images, name):
  for severity in corruptions.SEVERITIES:
    out = np.asarray(corruptions.corrupt(images, name, severity, seed=0))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.mean(out != images) > 0.005, (name, severity)   # impulse 1: ~1%


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_seed(images, name):
  a = np.asarray(corruptions.corrupt(images, name, 3, seed=1))
  np.testing.assert_array_equal(a, corruptions.corrupt(images, name, 3, seed=1))
  b = np.asarray(corruptions.corrupt(images, name, 3, seed=2))
  if name in RANDOM:
    assert np.mean(a != b) > 0.01
    for i in range(1, len(images)):     # one independent draw per image
      assert not np.array_equal(a[0].astype(int) - images[0], a[i].astype(int) - images[i])
  else:
    np.testing.assert_array_equal(a, b)


def test_chunks_equal_one_batch(images):
  whole = corruptions.corrupt(images, "speckle_noise", 4, seed=5)
  parts = [corruptions.corrupt(images[:3], "speckle_noise", 4, seed=5),
           corruptions.corrupt(images[3:], "speckle_noise", 4, seed=5, start_index=3)]
  np.testing.assert_array_equal(whole, np.concatenate(parts))


def test_jit_with_static_name_and_severity(images):
  f = jax.jit(corruptions.corrupt, static_argnames=("name", "severity"))
  np.testing.assert_array_equal(f(images, "impulse_noise", 2, seed=3),
                                corruptions.corrupt(images, "impulse_noise", 2, seed=3))


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_gaussian_noise_std(severity):
  """On flat grey 127 the output is floor(127 + 255 n): mean 126.5 (truncation) and
  variance (255 c)^2 + 1/12 (the fractional part ~ U(0, 1)); 98,304 samples."""
  c = corruptions.CONSTANTS["gaussian_noise"][severity - 1]
  grey = np.full((8, 64, 64, 3), 127, np.uint8)
  out = np.asarray(corruptions.corrupt(grey, "gaussian_noise", severity, seed=0), float)
  n, sd = out.size, np.sqrt((255 * c) ** 2 + 1 / 12)
  assert abs(out.mean() - 126.5) < 5 * sd / np.sqrt(n)
  assert abs(out.std() - sd) < 5 * sd / np.sqrt(2 * n)


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_impulse_noise_changes_a_fraction_amount(severity):
  """skimage's s&p: each value flipped with probability `amount`, to 0 or 255 with
  equal odds; on grey 127 every flip is a change."""
  amount = corruptions.CONSTANTS["impulse_noise"][severity - 1]
  grey = np.full((8, 64, 64, 3), 127, np.uint8)
  out = np.asarray(corruptions.corrupt(grey, "impulse_noise", severity, seed=0))
  changed = out != 127
  assert set(np.unique(out[changed])) <= {0, 255}
  se = np.sqrt(amount * (1 - amount) / out.size)
  assert abs(changed.mean() - amount) < 5 * se
  assert abs(np.mean(out[changed] == 255) - 0.5) < 5 * 0.5 / np.sqrt(changed.sum())


def test_contrast_by_hand():
  """Half the image 0, half 201 (every channel): mean 100.5, so (v - 100.5) c + 100.5
  is 100.5 -/+ 100.5 c: 25.125/175.875, 50.25/150.75, 60.3/140.7, 70.35/130.65,
  85.425/115.575, truncated."""
  x = np.zeros((1, 4, 4, 3), np.uint8)
  x[:, 2:] = 201
  want = [(25, 175), (50, 150), (60, 140), (70, 130), (85, 115)]
  for severity, (lo, hi) in zip(corruptions.SEVERITIES, want):
    out = np.asarray(corruptions.corrupt(x, "contrast", severity, seed=0))
    np.testing.assert_array_equal(out[0, :2], lo)
    np.testing.assert_array_equal(out[0, 2:], hi)


def test_hsv_matches_skimage(images):
  x = images / 255.0
  x[0, :2, :2] = [200 / 255, 200 / 255, .1]    # ties for the maximum, greys, black
  x[0, 2:4, :2] = [.1, .8, .8]
  x[0, 4:6, :2] = .5
  x[0, 6:8, :2] = 0
  hsv = jax.jit(corruptions.rgb_to_hsv)(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(hsv, skimage.color.rgb2hsv(x), atol=1e-6)
  h = np.random.default_rng(0).random((4096, 3))
  np.testing.assert_allclose(jax.jit(corruptions.hsv_to_rgb)(jnp.asarray(h, jnp.float32)),
                             skimage.color.hsv2rgb(h), atol=1e-6)


def test_saturate_and_brightness_of_a_hand_pixel():
  """Pixel (200, 101, 49): V = 200, S = 151/200, hue sector 0 with f = 52/151, so
  hsv2rgb gives (V, V - (1 - f) S' V, V (1 - S')) = (V, V - (99/151) S' V, V - S' V).
  saturate S' = S a + b: a = .3 -> (200, 170.3, 154.7); a = .1 -> (200, 190.1, 184.9);
  S' clipped to 1 at severities 3-5 -> (200, 200 f, 0) = (200, 68.87, 0).
  brightness scales the pixel by min(V + 255 c, 255) / V."""
  x = np.array([200, 101, 49], np.uint8).reshape(1, 1, 1, 3)
  sat = {1: (200, 170.3, 154.7), 2: (200, 190.1, 184.9)}
  for severity in corruptions.SEVERITIES:
    want = np.array(sat.get(severity, (200, 200 * 52 / 151, 0)))
    c = corruptions.CONSTANTS["brightness"][severity - 1]
    bright = np.array([200, 101, 49]) * min(200 + 255 * c, 255) / 200
    for name, w in (("saturate", want), ("brightness", bright)):
      out = np.asarray(corruptions.corrupt(x, name, severity, seed=0))[0, 0, 0]
      lo, hi = _truncated(w)
      assert np.all((lo <= out) & (out <= hi)), (name, severity, out, w)
    # and skimage's HSV math in float64, as make_cifar_c.py computes it
    a, b = corruptions.CONSTANTS["saturate"][severity - 1]
    hsv = skimage.color.rgb2hsv(x / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    np.testing.assert_allclose(skimage.color.hsv2rgb(hsv)[0, 0, 0] * 255, want, atol=1e-9)


@pytest.mark.parametrize("name", ["saturate", "brightness"])
def test_hsv_corruptions_match_skimage_on_real_images(images, name):
  for severity in corruptions.SEVERITIES:
    hsv = skimage.color.rgb2hsv(images / 255.0)
    c = corruptions.CONSTANTS[name][severity - 1]
    if name == "saturate":
      hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    else:
      hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    _assert_truncation_of(np.asarray(corruptions.corrupt(images, name, severity, seed=0)),
                          skimage.color.hsv2rgb(hsv))


def test_gaussian_blur_matches_scipy(images):
  x = images / 255.0
  for severity, sigma in zip(corruptions.SEVERITIES, corruptions.CONSTANTS["gaussian_blur"]):
    ref = np.stack([scipy.ndimage.gaussian_filter(x[..., c], (0, sigma, sigma), mode="nearest",
                                                  truncate=4.0) for c in range(3)], axis=-1)
    got = jax.jit(corruptions.gaussian_filter, static_argnums=1)(jnp.asarray(x, jnp.float32),
                                                                   sigma)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    _assert_truncation_of(
        np.asarray(corruptions.corrupt(images, "gaussian_blur", severity, seed=0)), ref)


def _plasma_reference(noise: np.ndarray, decay: float) -> np.ndarray:
  """make_cifar_c.py's plasma_fractal in float64, its U(-wibble, wibble) draws given
  as wibble * noise (noise in [-1, 1]), in the order squares, m[::s, h::s], m[h::s, ::s]."""
  n = 2 * noise.shape[-1]
  m = np.zeros((n, n))
  step, wibble, level = n, 100.0, 0
  while step >= 2:
    h, k = step // 2, n // step
    corners = m[0::step, 0::step]
    sq = corners + np.roll(corners, -1, axis=0)
    sq += np.roll(sq, -1, axis=1)
    m[h::step, h::step] = sq / 4 + wibble * wibble * noise[level, 0, :k, :k]
    dr, ul = m[h::step, h::step], m[0::step, 0::step]
    m[0::step, h::step] = ((dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)) / 4
                           + wibble * wibble * noise[level, 1, :k, :k])
    m[h::step, 0::step] = ((dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)) / 4
                           + wibble * wibble * noise[level, 2, :k, :k])
    step, wibble, level = step // 2, wibble / decay, level + 1
  m -= m.min()
  return m / m.max()


def test_plasma_fractal():
  noise = np.random.default_rng(0).uniform(-1, 1, (5, 3, 16, 16))
  for decay in (3.0, 1.75):
    got = jax.jit(corruptions.diamond_square)(jnp.asarray(noise, jnp.float32), decay)
    got = (got - got.min()) / (got.max() - got.min())
    np.testing.assert_allclose(got, _plasma_reference(noise, decay), atol=1e-5)
  f = jax.jit(corruptions.plasma_fractal, static_argnames="mapsize")
  a = np.asarray(f(jax.random.key(0), mapsize=32, wibbledecay=3.0))
  assert a.shape == (32, 32) and a.min() == 0 and a.max() == 1
  np.testing.assert_array_equal(a, f(jax.random.key(0), mapsize=32, wibbledecay=3.0))
  assert not np.array_equal(a, f(jax.random.key(1), mapsize=32, wibbledecay=3.0))
  with pytest.raises(ValueError, match="power of two"):
    corruptions.plasma_fractal(jax.random.key(0), mapsize=24)


def test_fog_on_a_flat_image_stays_below_the_image_max():
  """x + a F with F in [0, 1], times max / (max + a): at most the original max."""
  grey = np.full((8, 32, 32, 3), 100, np.uint8)   # the shape of `images`: one compilation
  for severity in corruptions.SEVERITIES:
    out = np.asarray(corruptions.corrupt(grey, "fog", severity, seed=0))
    assert out.max() <= 100 and out.min() < 100
    np.testing.assert_array_equal(out[..., 0], out[..., 2])   # one fractal for all channels


def _clipped_zoom_reference(x: np.ndarray, zoom: float) -> np.ndarray:
  """make_cifar_c.py's clipped_zoom on a square [h, h, 1] array (scipy zoom, order 1)."""
  h = x.shape[0]
  ch = int(np.ceil(h / zoom))
  top = (h - ch) // 2
  z = scipy.ndimage.zoom(x[top:top + ch, top:top + ch], (zoom, zoom, 1), order=1)
  trim = (z.shape[0] - h) // 2
  return z[trim:trim + h, trim:trim + h]


@pytest.mark.parametrize("zoom", [1.0, 1.25, 1.75, 2.25])
def test_clipped_zoom_matches_scipy(zoom):
  x = np.random.default_rng(0).normal(size=(32, 32, 1))
  m = corruptions.clipped_zoom_matrix(32, zoom)
  np.testing.assert_allclose(m @ x[..., 0] @ m.T, _clipped_zoom_reference(x, zoom)[..., 0],
                             atol=1e-12)


def test_motion_blur_of_a_point():
  """ImageMagick's kernel: out[y, x] = sum_i k_i layer[y + dy_i, x + dx_i]; a point at
  (8, 20) blurred at -90 degrees (dy_i = -i) lands on (8 + i, 20); at 0 degrees
  (dx_i = i) on (8, 20 - i); k_i = exp(-i^2 / 18) / sum, 17 taps (radius 8, sigma 3)."""
  k = corruptions.motion_blur_kernel(8, 3)
  want = np.exp(-np.arange(17) ** 2 / 18.0)
  np.testing.assert_allclose(k, want / want.sum(), rtol=1e-12)
  layer = np.zeros((32, 32), np.float32)
  layer[8, 20] = 1
  blur = jax.jit(corruptions.line_blur)
  down = np.asarray(blur(layer, -90.0, jnp.asarray(k, jnp.float32)))
  np.testing.assert_allclose(down[8:25, 20], k, atol=1e-7)
  assert abs(down.sum() - 1) < 1e-6
  left = np.asarray(blur(layer, 0.0, jnp.asarray(k, jnp.float32)))
  np.testing.assert_allclose(left[8, 20:3:-1], k, atol=1e-7)
  flat = np.asarray(blur(np.full((32, 32), .3, np.float32), -60.0, jnp.asarray(k, jnp.float32)))
  np.testing.assert_allclose(flat, .3, atol=1e-6)    # edges repeated, weights sum to 1


def test_frost_layers_are_opencvs_resize():
  cv2 = pytest.importorskip("cv2")
  stack, sizes = corruptions.frost_layers()
  dist = importlib.metadata.distribution("corrupt-tta")
  for i, f in enumerate(corruptions.FROST_FILES):
    with Image.open(dist.locate_file(f"corrupt_tta/assets/frost/{f}")) as im:
      rgb = np.asarray(im.convert("RGB"))
    want = cv2.resize(rgb, (0, 0), fx=0.2, fy=0.2)      # INTER_LINEAR, as make_cifar_c.py
    assert tuple(sizes[i]) == want.shape[:2]
    np.testing.assert_array_equal(stack[i, :sizes[i, 0], :sizes[i, 1]], want)


def test_frost_is_a_blend_with_a_frost_crop(images):
  """out = trunc(clip(a x + b frost)): with x = 0 the output is b frost, a crop of one
  of the five files."""
  black = np.zeros((8, 32, 32, 3), np.uint8)
  out = np.asarray(corruptions.corrupt(black, "frost", 5, seed=0)).astype(int)
  stack, sizes = corruptions.frost_layers()
  b = corruptions.CONSTANTS["frost"][4][1]
  for img in out:
    found = False
    for i in range(len(stack)):
      frost = stack[i, :sizes[i, 0], :sizes[i, 1]].astype(float)
      scaled = np.floor(b * frost)[:sizes[i, 0] - 31, :sizes[i, 1] - 31]   # top-left corners
      for y, x in np.argwhere(np.all(np.abs(scaled - img[0, 0]) <= 1, axis=-1)):
        found |= bool(np.all(np.abs(np.floor(b * frost[y:y + 32, x:x + 32]) - img) <= 1))
    assert found


def test_snow_adds_bright_streaks(images):
  for severity in corruptions.SEVERITIES:
    out = np.asarray(corruptions.corrupt(images, "snow", severity, seed=0)).astype(int)
    assert out.mean() > images.mean()


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="rain", severity=1), "unknown corruption 'rain'; known: gaussian_noise"),
    (dict(name="fog", severity=0), "severity must be an integer in 1..5"),
    (dict(name="fog", severity=6), "severity must be an integer in 1..5"),
    (dict(name="fog", severity=2.5), "severity must be an integer in 1..5"),
])
def test_bad_names_and_severities(images, kwargs, match):
  with pytest.raises(ValueError, match=match):
    corruptions.corrupt(images, seed=0, **kwargs)


@pytest.mark.parametrize("x, match", [
    (np.zeros((2, 32, 32, 3), np.float32), "images must be uint8, got float32"),
    (np.zeros((32, 32, 3), np.uint8), r"images must be \[B, H, W, 3\]"),
    (np.zeros((2, 32, 32, 4), np.uint8), r"images must be \[B, H, W, 3\]"),
])
def test_bad_images(x, match):
  with pytest.raises(ValueError, match=match):
    corruptions.corrupt(x, "contrast", 1, seed=0)


def test_frost_rejects_images_larger_than_the_frost_files():
  with pytest.raises(ValueError, match="frost needs images smaller than 63x105"):
    corruptions.corrupt(np.zeros((1, 64, 64, 3), np.uint8), "frost", 1, seed=0)


def test_names():
  assert corruptions.names() == corruptions.CORRUPTIONS and len(corruptions.CORRUPTIONS) == 10
  assert list(corruptions.SEVERITIES) == [1, 2, 3, 4, 5]
  assert all(len(v) == 5 for v in corruptions.CONSTANTS.values())
