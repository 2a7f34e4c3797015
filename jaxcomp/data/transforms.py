"""Image augmentation and preprocessing on the host (numpy + Pillow).

Batch transforms (pad-crop, flip) are vectorised: one fancy-indexing gather per
batch, no loop over images. Crop-and-resize of variable-size images (Inception
crop, centre crop) is per example through Pillow, which filters while it
resizes. All randomness comes in as arrays drawn by the caller, so a batch is a
pure function of those draws.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from PIL import Image


def pad_crop_flip(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, *,
                  pad: int = 4) -> np.ndarray:
  """Random-translation augmentation of CIFAR (He et al. 2016, Sec. 4.2).

  Zero-pads every image by `pad` pixels on each side, crops the original size
  at `offsets`, and mirrors left-right where `flips` is True.

  Args:
    images: uint8 [b, H, W, C].
    offsets: int [b, 2] in [0, 2 * pad]: (row, column) of the crop's top-left
      corner in the padded image; (pad, pad) is the unshifted image.
    flips: bool [b].
    pad: zero padding on each side.

  Returns:
    uint8 [b, H, W, C].
  """
  b, h, w, _ = images.shape
  offsets = np.asarray(offsets)
  if offsets.shape != (b, 2) or offsets.min(initial=0) < 0 or offsets.max(initial=0) > 2 * pad:
    raise ValueError(f"offsets must be int [{b}, 2] in [0, {2 * pad}], got shape {offsets.shape}")
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  rows = offsets[:, :1] + np.arange(h)                      # [b, H]
  cols = offsets[:, 1:] + np.arange(w)                      # [b, W]
  cols = np.where(np.asarray(flips)[:, None], cols[:, ::-1], cols)
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def flip(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
  """Left-right mirror of the images where `flips` (bool [b]) is True; uint8 [b, H, W, C]."""
  return np.where(np.asarray(flips)[:, None, None, None], images[:, :, ::-1], images)


def inception_boxes(sizes: np.ndarray, uniforms: np.ndarray, *,
                    area_range: tuple[float, float] = (0.08, 1.0),
                    aspect_range: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """Crop boxes of the Inception augmentation (Szegedy et al. 2015, Sec. 6).

  Each attempt draws an area fraction uniform in `area_range` and an aspect
  ratio (width / height) log-uniform in `aspect_range`; the first attempt that
  fits the image wins, placed uniformly at random. If none fits, the box is the
  largest centred crop with the aspect ratio clipped to `aspect_range`
  (torchvision's `RandomResizedCrop` fallback).

  Args:
    sizes: int [n, 2], (height, width) of each image.
    uniforms: float [n, attempts, 4] in [0, 1): area, log-aspect, row, column.

  Returns:
    int [n, 4]: (top, left, height, width) of each crop.
  """
  h, w = (np.asarray(sizes, np.float64)[:, i:i + 1] for i in (0, 1))   # [n, 1]
  u = np.asarray(uniforms, np.float64)
  area = h * w * (area_range[0] + u[..., 0] * (area_range[1] - area_range[0]))
  log_lo, log_hi = np.log(aspect_range[0]), np.log(aspect_range[1])
  aspect = np.exp(log_lo + u[..., 1] * (log_hi - log_lo))
  cw = np.round(np.sqrt(area * aspect))
  ch = np.round(np.sqrt(area / aspect))
  fits = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)                 # [n, attempts]
  first = np.argmax(fits, axis=1)
  pick = lambda a: np.take_along_axis(a, first[:, None], axis=1)[:, 0]
  ok = fits.any(axis=1)
  ch, cw = pick(ch), pick(cw)
  top = np.floor(pick(u[..., 2]) * (h[:, 0] - ch + 1))
  left = np.floor(pick(u[..., 3]) * (w[:, 0] - cw + 1))
  # Fallback: the whole image, cut to the aspect range, centred.
  ratio = w[:, 0] / h[:, 0]
  fw = np.where(ratio > aspect_range[1], np.round(h[:, 0] * aspect_range[1]), w[:, 0])
  fh = np.where(ratio < aspect_range[0], np.round(w[:, 0] / aspect_range[0]), h[:, 0])
  fw, fh = np.minimum(fw, w[:, 0]), np.minimum(fh, h[:, 0])
  boxes = np.stack([np.where(ok, top, (h[:, 0] - fh) // 2), np.where(ok, left, (w[:, 0] - fw) // 2),
                    np.where(ok, ch, fh), np.where(ok, cw, fw)], axis=1)
  return boxes.astype(np.int64)


def center_boxes(sizes: np.ndarray, out_hw: tuple[int, int], *, fraction: float) -> np.ndarray:
  """Centred crops with the aspect ratio of `out_hw`, `fraction` of the fitting size.

  With fraction 0.875 and a 224x224 output this is the ImageNet evaluation
  "resize the shorter side to 256, centre-crop 224".

  Args:
    sizes: int [n, 2], (height, width).
    out_hw: (H, W) of the output the crop will be resized to.
    fraction: in (0, 1], side of the crop relative to the largest centred one.

  Returns:
    int [n, 4]: (top, left, height, width).
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  h, w = (np.asarray(sizes, np.float64)[:, i] for i in (0, 1))
  scale = np.minimum(h / out_hw[0], w / out_hw[1]) * fraction
  ch = np.clip(np.round(out_hw[0] * scale), 1, h)
  cw = np.clip(np.round(out_hw[1] * scale), 1, w)
  return np.stack([(h - ch) // 2, (w - cw) // 2, ch, cw], axis=1).astype(np.int64)


def crop_resize(image: np.ndarray, box: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """Crops `box` = (top, left, height, width), then resizes bilinearly to `out_hw`.

  Pillow's bilinear filter widens with the scale factor, so downscaling is
  antialiased; a crop of the output size is returned without resampling.

  Args:
    image: uint8 [h, w, C] with C in {1, 3}.

  Returns:
    uint8 [H, W, C].
  """
  top, left, ch, cw = (int(v) for v in box)
  crop = image[top:top + ch, left:left + cw]
  if crop.shape[:2] == tuple(out_hw):
    return crop
  pil = Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop)
  out = pil.resize((out_hw[1], out_hw[0]), Image.BILINEAR)
  return np.asarray(out).reshape(out_hw[0], out_hw[1], image.shape[-1])


def normalize(images: jnp.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
  """`(images / 255 - mean) / std` per channel; jit-able.

  Args:
    images: uint8 or float [..., C] in [0, 255].
    mean, std: C values each, for images scaled to [0, 1] (`ImageDataset.mean/std`).

  Returns:
    `dtype` [..., C], roughly zero mean and unit variance per channel.
  """
  mean = jnp.asarray(mean, dtype)
  std = jnp.asarray(std, dtype)
  return (jnp.asarray(images).astype(dtype) / 255 - mean) / std
