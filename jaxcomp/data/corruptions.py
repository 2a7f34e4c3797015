"""CIFAR-10-C style corruptions with the CIFAR-10 constants (Hendrycks & Dietterich 2019).

The ten corruptions of the compressed-training thesis (papers/000, Ch. 4.2):
gaussian_noise, gaussian_blur, speckle_noise, contrast, impulse_noise, saturate,
brightness, fog, frost, snow, at severities 1..5, with the strengths of
`make_cifar_c.py` (hendrycks/robustness, `ImageNet-C/create_c/`), not ImageNet-C's
(REFERENCE_CODE.md Sec. A). Each one computes on floats in [0, 1] (frost on
[0, 255], as the original) and ends with `uint8(clip(x, 0, 1) * 255)`: truncation,
not rounding. Images are uint8 `[B, H, W, 3]`; the whole batch is corrupted at once
(vmap), image `i` with its own key `fold_in(key(seed), start_index + i)`, so the
result of an image depends only on (image, seed, its index), not on the batch it
came in: a data set corrupted in chunks with `start_index` equal to each chunk's
offset equals the data set corrupted in one call.

Where we depart from the original, and why (our sets are "CIFAR-10-C style
(regenerated)", never bit-identical to the released set):

  * arithmetic in float32 (the original: float64): a deterministic corruption can
    differ by one grey level where a value lands on an integer boundary;
  * gaussian_blur: `scipy.ndimage.gaussian_filter(x, sigma, mode="nearest",
    truncate=4.0)` per channel (what `skimage.filters.gaussian` calls);
  * brightness / saturate: the HSV of `skimage.color.rgb2hsv` / `hsv2rgb`.
    saturate's severities 1-2 *desaturate* (S * .3, S * .1) and 3-5 saturate, so
    its severities are not monotone in damage; kept as the original;
  * fog: the original's diamond-square `plasma_fractal(mapsize, wibbledecay)`
    (including its noise amplitude `wibble * U(-wibble, wibble)`); mapsize is the
    next power of two >= max(H, W) (32 for CIFAR), cropped to [:H, :W];
  * frost: one of frost1..frost5 per image (the original draws `randint(5)` over a
    list of six files, so frost6 is never used), read from the `corrupt-tta`
    package's copies of the same files (alpha dropped, as `cv2.imread`), resized by
    0.2 with OpenCV's INTER_LINEAR, which for the factor 0.2 samples source pixel
    `5 i + 2` exactly (half-pixel centres), i.e. the decimation `frost[2::5, 2::5]`;
    then a random H x W crop (images of at most 62 x 104 pixels fit every file);
  * snow: the layer is zoomed with `clipped_zoom` (scipy's order-1 zoom, per axis
    here; the original uses the height for both axes) and motion-blurred by
    ImageMagick's `MotionBlurImage(radius, sigma, angle)` through Wand. We
    reimplement that as ImageMagick computes it: a one-sided line kernel of
    `2 ceil(radius) + 1` taps with weights `exp(-i^2 / (2 sigma^2))` (normalised),
    tap i at the offset `(ceil(i cos a - .5), ceil(i sin a - .5))` (x right, y down),
    edge pixels repeated. It is an approximation of Wand's output (not checked
    against ImageMagick, which is not installed); the layer is truncated to uint8
    before the blur and rounded to uint8 after it, as the PNG round trips do.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "speckle_noise", "contrast",
               "impulse_noise", "saturate", "brightness", "fog", "frost", "snow")
SEVERITIES = range(1, 6)

# make_cifar_c.py: c[severity - 1] of each corruption (REFERENCE_CODE.md Sec. A).
CONSTANTS = {
    "gaussian_noise": (.04, .06, .08, .09, .10),
    "gaussian_blur": (.4, .6, .7, .8, 1.),
    "speckle_noise": (.06, .1, .12, .16, .2),
    "contrast": (.75, .5, .4, .3, .15),
    "impulse_noise": (.01, .02, .03, .05, .07),
    "saturate": ((.3, 0.), (.1, 0.), (1.5, 0.), (2., .1), (2.5, .2)),
    "brightness": (.05, .1, .15, .2, .3),
    "fog": ((.2, 3.), (.5, 3.), (.75, 2.5), (1., 2.), (1.5, 1.75)),
    "frost": ((1., .2), (1., .3), (.9, .4), (.85, .4), (.75, .45)),
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    "snow": ((.1, .2, 1., .6, 8, 3, .95), (.1, .2, 1., .5, 10, 4, .9),
             (.15, .3, 1.75, .55, 10, 4, .9), (.25, .3, 2.25, .6, 12, 6, .85),
             (.3, .3, 1.25, .65, 14, 12, .8)),
}
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def names() -> tuple[str, ...]:
  """The ten corruption names, in the thesis's order (Sec. 4.2)."""
  return CORRUPTIONS


# ----------------------------------------------------------------------------- pieces


def _flat(draw, key: jax.Array, shape: tuple[int, ...], **kwargs) -> jax.Array:
  """`draw(key, shape)` drawn flat and reshaped: XLA's threefry compiles in seconds
  for rank-4 and rank-5 shapes, in a fraction of a second for rank 1."""
  return draw(key, (math.prod(shape),), **kwargs).reshape(shape)


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """`skimage.color.rgb2hsv`: [..., 3] RGB floats in [0, 1] -> HSV in [0, 1].

  H is 0 where the pixel is grey (max == min); where two channels tie for the
  maximum, blue's formula wins over green's over red's, as skimage assigns them.
  """
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  grey = delta == 0
  safe = jnp.where(grey, 1.0, delta)
  s = jnp.where(grey, 0.0, delta / jnp.where(grey, 1.0, v))
  h = jnp.where(b == v, 4.0 + (r - g) / safe, jnp.where(g == v, 2.0 + (b - r) / safe,
                                                       (g - b) / safe))
  h = jnp.where(grey, 0.0, jnp.mod(h / 6.0, 1.0))
  return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """`skimage.color.hsv2rgb`: [..., 3] HSV in [0, 1] -> RGB in [0, 1]."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  hi = jnp.floor(h * 6.0)
  f = h * 6.0 - hi
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  sector = (hi.astype(jnp.int32) % 6)[..., None]
  choices = [jnp.stack(c, axis=-1) for c in
             ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
  return jnp.select([sector == i for i in range(6)], choices)


def gaussian_kernel(sigma: float, *, truncate: float = 4.0, radius: int | None = None
                    ) -> np.ndarray:
  """scipy.ndimage's 1-D Gaussian: `exp(-k^2 / (2 sigma^2))` for |k| <= radius, normalised.

  Args:
    sigma: standard deviation in pixels, > 0.
    truncate: the radius in standard deviations: `int(truncate * sigma + .5)`.
    radius: pad the kernel with zeros to this radius (>= scipy's own).

  Returns:
    float64 [2 radius + 1].
  """
  r = int(truncate * sigma + 0.5)
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  pad = 0 if radius is None else radius - r
  return np.pad(k / k.sum(), pad)


def separable_filter(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Correlate every channel with `kernel` along H, then W; edges repeated.

  Args:
    x: float [..., H, W, C].
    kernel: float [2 r + 1] (may be traced; its length is static).

  Returns:
    Same shape and dtype as x.
  """
  r = kernel.shape[0] // 2
  for axis in (x.ndim - 3, x.ndim - 2):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    x = sum(kernel[k] * jax.lax.slice_in_dim(xp, k, k + n, axis=axis)
            for k in range(2 * r + 1))
  return x


def gaussian_filter(x: jax.Array, sigma: float, *, truncate: float = 4.0) -> jax.Array:
  """`scipy.ndimage.gaussian_filter(x[..., c], sigma, mode="nearest", truncate=truncate)`
  for every channel c of a float [..., H, W, C] array; same shape and dtype."""
  return separable_filter(x, jnp.asarray(gaussian_kernel(sigma, truncate=truncate), x.dtype))


def diamond_square(noise: jax.Array, wibbledecay: float | jax.Array) -> jax.Array:
  """The diamond-square of `make_cifar_c.py`'s `plasma_fractal`, given its noise.

  Starts from a single 0 corner and wibble 100; at each scale (stepsize mapsize,
  mapsize/2, ..., 2) fills the square centres, then the diamond centres between
  two rows (`m[::s, s/2::s]`), then those between two columns (`m[s/2::s, ::s]`),
  each with the mean of its four (periodic) neighbours plus `wibble * U(-wibble,
  wibble)`, and divides wibble by `wibbledecay` (a larger decay: smoother fog).

  Args:
    noise: float [levels, 3, mapsize/2, mapsize/2] in [-1, 1], levels = log2(mapsize):
      `noise[l, j, :2^l, :2^l]` is the U(-1, 1) draw of scale l for the centres,
      row-diamonds and column-diamonds (j = 0, 1, 2); the rest is unused.
    wibbledecay: the noise decay per scale, > 1 (may be traced).

  Returns:
    float32 [mapsize, mapsize], not normalised.
  """
  levels = noise.shape[0]
  decay = jnp.asarray(wibbledecay, jnp.float32)
  g = jnp.zeros((1, 1), jnp.float32)     # the points known so far: m[::step, ::step]
  for level in range(levels):
    n = 1 << level
    wibbles = (100.0 / decay ** level) ** 2 * noise[level, :, :n, :n]
    sq = g + jnp.roll(g, -1, axis=0)
    centre = (sq + jnp.roll(sq, -1, axis=1)) / 4 + wibbles[0]             # m[h::s, h::s]
    left = (centre + jnp.roll(centre, 1, axis=0) + g + jnp.roll(g, -1, axis=1)) / 4 + wibbles[1]
    top = (centre + jnp.roll(centre, 1, axis=1) + g + jnp.roll(g, -1, axis=0)) / 4 + wibbles[2]
    # Interleave: m[::s, ::s] = g, m[::s, h::s] = left, m[h::s, ::s] = top, m[h::s, h::s] = centre.
    g = jnp.stack([jnp.stack([g, left], -1), jnp.stack([top, centre], -1)], 1)
    g = g.reshape(2 * n, 2 * n)
  return g


def plasma_fractal(key: jax.Array, *, mapsize: int = 32,
                   wibbledecay: float | jax.Array = 3.0) -> jax.Array:
  """`make_cifar_c.py`'s `plasma_fractal(mapsize, wibbledecay)`: `diamond_square`
  with fresh U(-1, 1) noise, min-max normalised.

  Args:
    key: a PRNG key.
    mapsize: side of the map, a power of two >= 2 (static).
    wibbledecay: the noise decay per scale, > 1 (may be traced).

  Returns:
    float32 [mapsize, mapsize] in [0, 1].
  """
  if mapsize < 2 or mapsize & (mapsize - 1):
    raise ValueError(f"mapsize must be a power of two >= 2, got {mapsize}")
  shape = (mapsize.bit_length() - 1, 3, mapsize // 2, mapsize // 2)
  m = diamond_square(_flat(jax.random.uniform, key, shape, minval=-1.0), wibbledecay)
  m = m - m.min()
  return m / m.max()


def clipped_zoom_matrix(n: int, zoom: float) -> np.ndarray:
  """The linear map of `make_cifar_c.py`'s `clipped_zoom` along one axis of length n.

  Crop the centre `ceil(n / zoom)` samples, zoom them with
  `scipy.ndimage.zoom(order=1)` (corners aligned: output j samples input
  `j (ch - 1) / (out - 1)`, out = round(ch zoom)), keep the centre n samples.

  Returns:
    float64 [n, n]: `zoomed = M @ x` along that axis.
  """
  ch = math.ceil(n / zoom)
  top = (n - ch) // 2
  out = round(ch * zoom)
  trim = (out - n) // 2
  src = (np.arange(n) + trim) * ((ch - 1) / (out - 1) if out > 1 else 0.0)
  lo = np.minimum(np.floor(src).astype(int), ch - 1)
  frac = src - lo
  hi = np.minimum(lo + 1, ch - 1)
  m = np.zeros((n, n))
  np.add.at(m, (np.arange(n), top + lo), 1 - frac)
  np.add.at(m, (np.arange(n), top + hi), frac)
  return m


def motion_blur_kernel(radius: float, sigma: float, *, taps: int | None = None
                       ) -> np.ndarray:
  """ImageMagick's motion-blur weights: `exp(-i^2 / (2 sigma^2))`, i = 0 .. 2 ceil(radius),
  normalised; zero-padded to `taps` entries. float64 [taps or 2 ceil(radius) + 1]."""
  width = int(2 * math.ceil(radius) + 1)
  k = np.exp(-np.arange(width) ** 2 / (2.0 * sigma ** 2))
  return np.pad(k / k.sum(), (0, 0 if taps is None else taps - width))


def line_blur(layer: jax.Array, angle: jax.Array, kernel: jax.Array) -> jax.Array:
  """ImageMagick's `MotionBlurImage` of one grey image with the weights `kernel`.

  `out[y, x] = sum_i kernel[i] layer[y + dy_i, x + dx_i]` with
  `dx_i = ceil(i cos(angle) - .5)`, `dy_i = ceil(i sin(angle) - .5)` (x right, y
  down); pixels outside the image are taken from the nearest edge (ImageMagick's
  default virtual pixels). Each output looks along `angle`, so a bright point
  smears the opposite way: to the left at 0 degrees, downwards at -90 (snow's
  angles, U(-135, -45), make falling streaks).

  Args:
    layer: float [H, W].
    angle: scalar, degrees.
    kernel: float [T] (`motion_blur_kernel`; may be traced, T static).

  Returns:
    float [H, W], unrounded.
  """
  a = jnp.deg2rad(angle)
  h, w = layer.shape
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  out = jnp.zeros_like(layer)
  for i in range(kernel.shape[0]):
    dx = jnp.ceil(i * jnp.cos(a) - 0.5).astype(jnp.int32)
    dy = jnp.ceil(i * jnp.sin(a) - 0.5).astype(jnp.int32)
    out = out + kernel[i] * layer[jnp.clip(rows + dy, 0, h - 1), jnp.clip(cols + dx, 0, w - 1)]
  return out


@functools.lru_cache(maxsize=1)
def frost_layers() -> tuple[np.ndarray, np.ndarray]:
  """frost1..frost5 of the `corrupt-tta` package, RGB, resized by 0.2 (see the module doc).

  Returns:
    (stack, sizes): uint8 [5, Hmax, Wmax, 3] zero-padded to the largest file, and
    int32 [5, 2], each file's (height, width) after the resize.

  Raises:
    ImportError: when `corrupt-tta` is not installed.
  """
  try:
    dist = importlib.metadata.distribution("corrupt-tta")
  except importlib.metadata.PackageNotFoundError as e:
    raise ImportError("the frost corruption reads the frost images shipped by the "
                      "'corrupt-tta' package: pip install corrupt-tta==0.1.7") from e
  layers = []
  for f in FROST_FILES:
    with Image.open(dist.locate_file(f"corrupt_tta/assets/frost/{f}")) as im:
      rgb = np.asarray(im.convert("RGB"))
    h, w = round(rgb.shape[0] * 0.2), round(rgb.shape[1] * 0.2)
    layers.append(rgb[2::5, 2::5][:h, :w])
  sizes = np.array([x.shape[:2] for x in layers], np.int32)
  stack = np.zeros((len(layers), *sizes.max(0), 3), np.uint8)
  for i, x in enumerate(layers):
    stack[i, :x.shape[0], :x.shape[1]] = x
  return stack, sizes


# ----------------------------------------------------------------- one image each
# f(x, key, s): x float32 [H, W, 3] in [0, 1], s = severity - 1 (traced, so the five
# severities share one compilation) -> the values the original passes to np.uint8
# (on [0, 255]).


def _pick(values, s: jax.Array) -> jax.Array:
  """Row s of a table of the five severities' constants, as float32."""
  return jnp.asarray(np.asarray(values, np.float64), jnp.float32)[s]


def _to_255(x: jax.Array) -> jax.Array:
  return jnp.clip(x, 0.0, 1.0) * 255.0


def _gaussian_noise(x, key, s):
  return _to_255(x + _pick(CONSTANTS["gaussian_noise"], s) * _flat(jax.random.normal, key, x.shape))


def _speckle_noise(x, key, s):
  c = _pick(CONSTANTS["speckle_noise"], s)
  return _to_255(x + x * c * _flat(jax.random.normal, key, x.shape))


def _impulse_noise(x, key, s):
  """skimage `random_noise(mode="s&p", amount=c)`: each value flipped with
  probability c, to 1 or 0 with equal odds."""
  u = _flat(jax.random.uniform, key, (2,) + x.shape)
  flipped, salted = u[0] < _pick(CONSTANTS["impulse_noise"], s), u[1] < 0.5
  return _to_255(jnp.where(flipped, salted.astype(x.dtype), x))


def _gaussian_blur(x, key, s):
  del key
  sigmas = CONSTANTS["gaussian_blur"]
  radius = max(int(4.0 * c + 0.5) for c in sigmas)
  return _to_255(separable_filter(x, _pick([gaussian_kernel(c, radius=radius)
                                            for c in sigmas], s)))


def _contrast(x, key, s):
  del key
  means = jnp.mean(x, axis=(0, 1), keepdims=True)
  return _to_255((x - means) * _pick(CONSTANTS["contrast"], s) + means)


def _brightness(x, key, s):
  del key
  hsv = rgb_to_hsv(x)
  v = jnp.clip(hsv[..., 2] + _pick(CONSTANTS["brightness"], s), 0.0, 1.0)
  return _to_255(hsv_to_rgb(hsv.at[..., 2].set(v)))


def _saturate(x, key, s):
  del key
  a, b = _pick(CONSTANTS["saturate"], s)
  hsv = rgb_to_hsv(x)
  return _to_255(hsv_to_rgb(hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * a + b, 0.0, 1.0))))


def _fog(x, key, s):
  amount, decay = _pick(CONSTANTS["fog"], s)
  h, w = x.shape[:2]
  mapsize = 1 << (max(h, w, 2) - 1).bit_length()     # the next power of two >= H, W
  max_val = jnp.max(x)
  x = x + amount * plasma_fractal(key, mapsize=mapsize, wibbledecay=decay)[:h, :w, None]
  return _to_255(x * max_val / (max_val + amount))


def _frost(x, key, s):
  a, b = _pick(CONSTANTS["frost"], s)
  stack, sizes = frost_layers()
  h, w = x.shape[:2]
  u = jax.random.uniform(key, (3,))
  i = jnp.minimum(jnp.floor(u[0] * len(FROST_FILES)).astype(jnp.int32), len(FROST_FILES) - 1)
  room = jnp.asarray(sizes)[i] - jnp.array([h, w])                # randint(0, room)
  y0, x0 = jnp.minimum(jnp.floor(u[1:] * room).astype(jnp.int32), room - 1)
  frost = jax.lax.dynamic_slice(jnp.asarray(stack), (i, y0, x0, 0), (1, h, w, 3))[0]
  return jnp.clip(a * (x * 255.0) + b * frost.astype(x.dtype), 0.0, 255.0)


def _snow(x, key, s):
  table = CONSTANTS["snow"]
  loc, scale, _, threshold, _, _, blend = _pick(table, s)
  h, w = x.shape[:2]
  zoom_h = _pick([clipped_zoom_matrix(h, c[2]) for c in table], s)
  zoom_w = _pick([clipped_zoom_matrix(w, c[2]) for c in table], s)
  taps = max(int(2 * math.ceil(c[4]) + 1) for c in table)
  kernel = _pick([motion_blur_kernel(c[4], c[5], taps=taps) for c in table], s)
  k_layer, k_angle = jax.random.split(key)
  layer = zoom_h @ (loc + scale * _flat(jax.random.normal, k_layer, (h, w))) @ zoom_w.T
  layer = jnp.where(layer < threshold, 0.0, layer)
  layer = jnp.floor(jnp.clip(layer, 0.0, 1.0) * 255.0)          # to a PIL "L" image
  angle = jax.random.uniform(k_angle, (), minval=-135.0, maxval=-45.0)
  layer = jnp.floor(line_blur(layer, angle, kernel) + 0.5) / 255.0   # 8-bit PNG out
  gray = x @ jnp.asarray([0.299, 0.587, 0.114], x.dtype)             # cv2 RGB2GRAY
  x = blend * x + (1 - blend) * jnp.maximum(x, gray[..., None] * 1.5 + 0.5)
  return _to_255(x + (layer + jnp.rot90(layer, 2))[..., None])


_FUNCTIONS = {
    "gaussian_noise": _gaussian_noise, "gaussian_blur": _gaussian_blur,
    "speckle_noise": _speckle_noise, "contrast": _contrast, "impulse_noise": _impulse_noise,
    "saturate": _saturate, "brightness": _brightness, "fog": _fog, "frost": _frost,
    "snow": _snow,
}


@functools.partial(jax.jit, static_argnames=("name",))
def _corrupt(images: jax.Array, s: jax.Array, seed: jax.Array, start_index: jax.Array,
             *, name: str) -> jax.Array:
  keys = jax.vmap(jax.random.fold_in, (None, 0))(
      jax.random.key(seed), start_index + jnp.arange(images.shape[0], dtype=jnp.uint32))
  x = images.astype(jnp.float32) / 255.0
  y = jax.vmap(_FUNCTIONS[name], (0, 0, None))(x, keys, s)
  return jnp.clip(y, 0.0, 255.0).astype(jnp.uint8)


def corrupt(images: jax.Array, name: str, severity: int, *, seed: int | jax.Array,
            start_index: int | jax.Array = 0) -> jax.Array:
  """Corrupt a batch as CIFAR-10-C does (`make_cifar_c.py`, CIFAR constants).

  Jit-able with `name` and `severity` static; one compilation per (name, shape)
  serves the five severities.

  Args:
    images: uint8 [B, H, W, 3].
    name: one of `CORRUPTIONS`.
    severity: 1..5.
    seed: an integer; image i uses the key `fold_in(key(seed), start_index + i)`.
    start_index: the index of images[0] in its data set (for chunked generation).

  Returns:
    uint8 [B, H, W, 3]: `uint8(clip(corrupted, 0, 1) * 255)` (truncated).

  Raises:
    ValueError: unknown name, severity outside 1..5, images not uint8 [B, H, W, 3],
      or (frost) images too large for the frost files.
  """
  if name not in _FUNCTIONS:
    raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
  if isinstance(severity, bool) or severity not in SEVERITIES:
    raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
  if images.dtype != jnp.uint8:
    raise ValueError(f"images must be uint8, got {images.dtype}")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B, H, W, 3], got shape {images.shape}")
  if name == "frost":
    sizes = frost_layers()[1]
    if images.shape[1] >= sizes[:, 0].min() or images.shape[2] >= sizes[:, 1].min():
      raise ValueError(f"frost needs images smaller than {sizes[:, 0].min()}x"
                       f"{sizes[:, 1].min()} (the 0.2-scaled frost files), got "
                       f"{images.shape[1]}x{images.shape[2]}")
  return _corrupt(images, jnp.int32(severity - 1), seed, start_index, name=name)
