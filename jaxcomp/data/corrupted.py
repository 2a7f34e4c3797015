"""Corrupted datasets: CIFAR-10-C style test sets and the thesis's noise / blur training sets.

    corrupted:<source>:<name>:<level>         every split corrupted
    corrupted_train:<source>:<name>:<level>   the training split only (the thesis's
                                              augmentation baselines, Ch. 4, Table 4.1)

<name>:<level> is one of
  * a CIFAR-10-C corruption (`corruptions.CORRUPTIONS`: gaussian_noise, gaussian_blur,
    speckle_noise, contrast, impulse_noise, saturate, brightness, fog, frost, snow)
    at severity 1..5, with the CIFAR-10 constants (`corruptions.corrupt`);
  * `noise:<sigma>`: the Gaussian-noise baseline of Table 4.1, `x + N(0, sigma^2)`
    on [0, 1] pixels, clipped to [0, 1] (sigma in {1, .8, .3, .1, .05, .01} there);
  * `blur:<k>`: the Gaussian-blur baseline of Table 4.1, a k x k Gaussian (k odd,
    3x3 .. 9x9 there). The thesis does not state sigma; we take OpenCV's rule for a
    k x k kernel, `sigma = 0.3 ((k - 1) / 2 - 1) + 0.8` (0.8, 1.1, 1.4, 1.7 for
    k = 3, 5, 7, 9), edges repeated.
The baselines round to uint8; the corruptions truncate, as `make_cifar_c.py` does.

Randomness: image i of a split uses `fold_in(key(seed), i)` with `seed = crc32
("<name>:<level>")`, so a set is the same however it is chunked, and two
corruptions draw independent noise. Sets are cached like compressed ones (`derived`).
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.data import corruptions, derived
from jaxcomp.data.dataset import DATASETS, ImageDataset

GRAMMAR = ("corrupted:<source>:<name>:<level>, <name>:<level> = <corruption>:<severity 1..5> "
           f"(corruption one of {', '.join(corruptions.CORRUPTIONS)}) | noise:<sigma > 0> | "
           "blur:<odd kernel size >= 3>")
_VERSION = "1"


def blur_sigma(kernel_size: int) -> float:
  """OpenCV's sigma for a k x k Gaussian kernel given none (`cv2.getGaussianKernel`)."""
  return 0.3 * ((kernel_size - 1) / 2 - 1) + 0.8


@jax.jit
def gaussian_noise(images: jax.Array, *, sigma: float, seed: int | jax.Array,
                   start_index: int | jax.Array = 0) -> jax.Array:
  """Table 4.1's noise baseline: `round(255 clip(x + sigma N(0, 1), 0, 1))`, x = images / 255.

  Args:
    images: uint8 [B, H, W, C].
    sigma: standard deviation on the [0, 1] scale, > 0.
    seed: image i draws from `fold_in(key(seed), start_index + i)`.
    start_index: index of images[0] in its set.

  Returns:
    uint8 [B, H, W, C].
  """
  keys = jax.vmap(jax.random.fold_in, (None, 0))(
      jax.random.key(seed), start_index + jnp.arange(images.shape[0], dtype=jnp.uint32))
  noise = jax.vmap(lambda k: jax.random.normal(k, (np.prod(images.shape[1:]),)))(keys)
  x = images.astype(jnp.float32) / 255.0 + sigma * noise.reshape(images.shape)
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("kernel_size",))
def gaussian_blur(images: jax.Array, *, kernel_size: int) -> jax.Array:
  """Table 4.1's blur baseline: a k x k Gaussian of `blur_sigma(k)`, edges repeated.

  Args:
    images: uint8 [B, H, W, C].
    kernel_size: odd k >= 3.

  Returns:
    uint8 [B, H, W, C], rounded.
  """
  sigma = blur_sigma(kernel_size)
  kernel = corruptions.gaussian_kernel(sigma, truncate=(kernel_size // 2) / sigma)
  x = corruptions.separable_filter(images.astype(jnp.float32), jnp.asarray(kernel, jnp.float32))
  return jnp.round(jnp.clip(x, 0.0, 255.0)).astype(jnp.uint8)


def parse(rest: str) -> tuple[str, str, int | float]:
  """`"<source>:<name>:<level>"` -> (source, name, level).

  Raises:
    ValueError: an unknown name or a level out of range (the message shows the grammar).
  """
  source, (name, level) = derived.split_right(rest, 2, "corrupted", GRAMMAR)
  if name in corruptions.CORRUPTIONS:
    if not level.isdigit() or int(level) not in corruptions.SEVERITIES:
      raise ValueError(f"corrupted: severity must be in 1..5, got {level!r}; expected {GRAMMAR}")
    return source, name, int(level)
  if name == "noise":
    try:
      sigma = float(level)
    except ValueError:
      sigma = float("nan")
    if not sigma > 0 or not np.isfinite(sigma):
      raise ValueError(f"corrupted: noise sigma must be a number > 0, got {level!r}")
    return source, name, sigma
  if name == "blur":
    if not level.isdigit() or int(level) < 3 or int(level) % 2 == 0:
      raise ValueError(f"corrupted: blur kernel size must be odd and >= 3, got {level!r}")
    return source, name, int(level)
  raise ValueError(f"corrupted: unknown corruption {name!r}; expected {GRAMMAR}")


def seed_of(name: str, level: int | float) -> int:
  """The seed of a set: CRC-32 of "<name>:<level>" (31 bits)."""
  return zlib.crc32(f"{name}:{level}".encode()) & 0x7FFFFFFF


def transform(name: str, level: int | float) -> derived.Transform:
  """The derived-set transform of a corruption or baseline."""
  seed = seed_of(name, level)

  if name == "noise":
    one = lambda x, i: gaussian_noise(x, sigma=float(level), seed=seed, start_index=i)
  elif name == "blur":
    one = lambda x, i: gaussian_blur(x, kernel_size=int(level))
  else:
    one = lambda x, i: corruptions.corrupt(jnp.asarray(x), name, int(level), seed=seed,
                                           start_index=i)

  def fn(images: np.ndarray, start: int) -> dict[str, np.ndarray]:
    return {"images": derived.in_batches(one, images, start=start)}
  return derived.Transform(f"{_VERSION}|{name}:{level}|seed={seed}", fn,
                           rgb_only=name not in ("noise", "blur"))


def _factory(prefix: str, only_train: bool):
  def factory(data_config: ml_collections.ConfigDict, split: str, rest: str) -> ImageDataset:
    source, name, level = parse(rest)
    return derived.derived_dataset(data_config, split, name=f"{prefix}{rest}", base_name=source,
                                   transform=transform(name, level), only_train=only_train)
  factory.__doc__ = f"`{prefix}<source>:<name>:<level>` (module docstring)."
  return factory


DATASETS.register_prefix("corrupted:", _factory("corrupted:", only_train=False))
DATASETS.register_prefix("corrupted_train:", _factory("corrupted_train:", only_train=True))
