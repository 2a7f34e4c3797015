"""Pixel deflection (Algorithm 2 of the thesis, papers/001 Ch. 4.5-4.6), vectorised.

K times: pick a pixel p uniformly from the image, pick a pixel n uniformly
from the square window of apothem r around p clipped to the image
(`U(R_p^r ∩ I)`; the whole image when r > min(H, W)), and write I'[p] = I[n]
(all channels; the value is read from the original image I, so deflections do
not chain). K counts sampling attempts, not performed deflections. Targeted
variant (Sec. 4.8): the picked pixel is deflected only if its R-CAM value is
below a fresh U(0, 1) draw, so salient pixels are deflected less.

All K draws of all images are made at once; when one pixel is picked several
times the last attempt wins, as in the sequential loop (resolved by comparing
the K attempts of an image with each other, so the result is deterministic). Clipping
the window to the image is the same distribution as the reference code's
resampling of offsets until they fall inside the image.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def pixel_deflection(images: jax.Array, key: jax.Array, *, deflections: int = 100,
                     window: int = 10, rcam: jax.Array | None = None) -> jax.Array:
  """Pixel deflection of a batch (Algorithm 2; targeted when `rcam` is given).

  Args:
    images: [B, H, W, C] images (any dtype; values are copied, not changed).
    key: PRNG key; the draws of different images are independent.
    deflections: K >= 0, sampling attempts per image (100 in Table 4.1).
    window: r >= 0, apothem of the square neighbourhood (10 in Table 4.1).
    rcam: optional [B, H, W] map in [0, 1] (`robust_cam`); a pixel with value
      v is deflected with probability 1 - v.

  Returns:
    [B, H, W, C] images with at most K pixels per image replaced by pixels of
    their windows in the input.
  """
  check_arguments(images, deflections, window, rcam)
  if deflections == 0:
    return images
  return deflect(images, draw(key, images.shape[0], int(deflections)), rcam, window=int(window))


def check_arguments(images: jax.Array, deflections: int, window: int,
                    rcam: jax.Array | None) -> None:
  """The ValueErrors of `pixel_deflection` for a bad K, r or R-CAM shape."""
  chex.assert_rank(images, 4)
  if int(deflections) != deflections or deflections < 0:
    raise ValueError(f"deflections must be an integer >= 0, got {deflections}")
  if int(window) != window or window < 0:
    raise ValueError(f"window must be an integer >= 0, got {window}")
  b, h, w, _ = images.shape
  if rcam is not None and rcam.shape != (b, h, w):
    raise ValueError(f"rcam must be [B, H, W] = {(b, h, w)}, got {rcam.shape}")


def draw(key: jax.Array, batch: int, deflections: int) -> jax.Array:
  """All the uniforms of a batch's deflections, [5, B, K]: pixel row, column, source row,
  column, R-CAM test. One threefry call keeps the compiled program small."""
  return jax.random.uniform(key, (5, batch, deflections))


def _uniform_int(u: jax.Array, lo: jax.Array | int, hi: jax.Array | int) -> jax.Array:
  """Integers uniform in [lo, hi] from uniforms u in [0, 1)."""
  return jnp.minimum(lo + jnp.floor(u * (hi - lo + 1)).astype(jnp.int32), hi)


def moves(u: jax.Array, rcam: jax.Array | None, *, height: int, width: int, window: int
          ) -> tuple[jax.Array, jax.Array]:
  """The attempts of `draw`'s uniforms `u` [5, B, K] as pixel moves: flat indices of the
  picked pixels `dest` and of their sources `src`, [B, K] int32 each, in attempt order;
  dest = H * W (moves nothing) where R-CAM vetoes the attempt (`move_pixels`)."""
  h, w = height, width
  py, px = _uniform_int(u[0], 0, h - 1), _uniform_int(u[1], 0, w - 1)
  if window > min(h, w):  # Algorithm 2: the whole image is the neighbourhood
    ny, nx = _uniform_int(u[2], 0, h - 1), _uniform_int(u[3], 0, w - 1)
  else:  # uniform over the window clipped to the image
    ny = _uniform_int(u[2], jnp.maximum(py - window, 0), jnp.minimum(py + window, h - 1))
    nx = _uniform_int(u[3], jnp.maximum(px - window, 0), jnp.minimum(px + window, w - 1))
  dest, src = py * w + px, ny * w + nx
  if rcam is not None:
    b = u.shape[1]
    v = jnp.take_along_axis(rcam.reshape(b, -1), dest, axis=1)
    dest = jnp.where(v < u[4], dest, h * w)
  return dest, src


def move_pixels(images: jax.Array, dest: jax.Array, src: jax.Array) -> jax.Array:
  """Pixel dest[b, k] of image b takes the value of its pixel src[b, k] in `images`.

  Args:
    images: [B, H, W, C].
    dest, src: [B, K] integer flat pixel indices (row * W + column); the moves apply
      in order k = 0 .. K - 1 and a later move to the same pixel wins, as in the
      sequential loop; every value is read from `images`, so moves do not chain; a
      move whose dest or src lies outside [0, H W) moves nothing.

  Returns:
    [B, H, W, C], every pixel written at most once.
  """
  b, h, w, c = images.shape
  deflections = dest.shape[-1]
  valid = (dest >= 0) & (dest < h * w) & (src >= 0) & (src < h * w)
  # A move wins unless a later valid move writes the same pixel: found by a [K, K]
  # comparison of an image's moves when that is smaller than the image, else by a
  # scatter-max of the move number into an [H * W] map.
  rows = jnp.arange(b)[:, None]
  if deflections * deflections <= h * w:
    later = jnp.arange(deflections)[None, :] > jnp.arange(deflections)[:, None]    # [k, j]: j > k
    overwritten = jnp.any(later & (dest[:, :, None] == dest[:, None, :]) & valid[:, None, :],
                          axis=-1)
    wins = valid & ~overwritten
  else:
    order = jnp.where(valid, jnp.arange(deflections), -1)
    winner = jnp.full((b, h * w), -1, jnp.int32).at[rows, dest].max(order, mode="drop")
    wins = valid & (jnp.take_along_axis(winner, jnp.clip(dest, 0, h * w - 1), axis=1) == order)
  flat = images.reshape(b, h * w, c)
  values = jnp.take_along_axis(flat, jnp.clip(src, 0, h * w - 1)[..., None], axis=1)  # [B, K, C]
  dest = jnp.where(wins, dest, h * w)  # out of range: dropped
  return flat.at[rows, dest].set(values, mode="drop", unique_indices=True).reshape(images.shape)


def deflect(images: jax.Array, u: jax.Array, rcam: jax.Array | None, *, window: int
            ) -> jax.Array:
  """Pixel deflection of `images` [B, H, W, C] with the uniforms `u` [5, B, K] of `draw`."""
  h, w = images.shape[1:3]
  return move_pixels(images, *moves(u, rcam, height=h, width=w, window=window))
