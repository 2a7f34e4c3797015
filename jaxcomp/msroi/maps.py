"""MS-ROI saliency maps (thesis papers/001, Eq. 2.4-2.5) and Aug-MSROI (Sec. 3.6).

From the class maps `M_c` [B, h, w, C] and logits of `MSROINet`:

  * "top5" (default; "in practice ... pick the top five classes and combine them
    via a sum weighted by their rank", Sec. 2.3): the `top_k` classes by logit,
    the i-th best (i = 1..k) weighted by its rank `k + 1 - i` (5, 4, 3, 2, 1);
  * "threshold" (Eq. 2.5): the sum of the maps of the classes with
    `logit_c = Z_c + b_c > T` (i.e. `Z_c > T - b_c`; T = 0 keeps the classes
    with P(c) > 1/2);
  * "code" (the author's `generate_map.py`, an option): each of the top-k maps
    min-max normalised at image resolution, combined from the k-th best upwards
    by `roi = 1.2 m_k`, `roi = (roi + m_i) / 2` (weights 1/2, 1/4, ..., 1/2^(k-1)
    and 1.2/2^(k-1) for the k-th), then min-max normalised again.

The map is upsampled bilinearly (`jax.image.resize`, half-pixel centres, edge
samples replicated) from the [h, w] grid to [h * s, w * s], s = the network's
stride (32), and cropped to [H, W]: cell (i, j) stays centred on the pixels
it sees. "top5" and "threshold" combine the class maps clipped at 0 (the
network's signed class weights make a negative `M_c` evidence against class c,
not saliency; the thesis's maps are sums of ReLU outputs, hence non-negative)
and divide the result by its maximum, so it lies in [0, 1] with 0 where no
selected class responds (all zero if none does); "code" min-max normalises
the signed maps as the author's code does with its CAMs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.codecs.jpeg import check_images
from jaxcomp.msroi import network

METHODS = ("top5", "threshold", "code")


def _upsample(maps: jax.Array, stride: int, size: tuple[int, int]) -> jax.Array:
  """[B, h, w, ...] -> [B, H, W, ...]: bilinear to [h * stride, w * stride], cropped."""
  b, h, w = maps.shape[:3]
  up = jax.image.resize(maps, (b, h * stride, w * stride, *maps.shape[3:]), method="bilinear")
  return up[:, :size[0], :size[1]]


def _divide_by_max(m: jax.Array) -> jax.Array:
  m = jnp.maximum(m, 0.0)
  peak = jnp.max(m, axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, m / jnp.where(peak > 0, peak, 1.0), 0.0)


def _min_max(m: jax.Array) -> jax.Array:
  lo, hi = jnp.min(m, axis=(1, 2), keepdims=True), jnp.max(m, axis=(1, 2), keepdims=True)
  return jnp.where(hi > lo, (m - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)


def combine_class_maps(class_maps: jax.Array, logits: jax.Array, *, image_size: tuple[int, int],
                       stride: int, method: str = "top5", threshold: float = 0.0,
                       top_k: int = 5) -> jax.Array:
  """The MS-ROI map from class maps and logits (Eq. 2.5 and its rank-weighted form).

  Args:
    class_maps: [B, h, w, C] float class maps `M_c = sum_d w_d^c f_d^c`.
    logits: [B, C] float `Z_c + b_c`; they rank and select the classes.
    image_size: (H, W) of the output, at most (h * stride, w * stride).
    stride: input pixels per map cell (the network's downsampling).
    method: "top5" | "threshold" | "code" (module docstring).
    threshold: T of "threshold", compared with the logits.
    top_k: classes combined by "top5" and "code" (5 in the thesis), in [1, C].

  Returns:
    [B, H, W] float32 map in [0, 1].
  """
  if class_maps.ndim != 4 or logits.shape != (class_maps.shape[0], class_maps.shape[-1]):
    raise ValueError(f"class_maps [B, h, w, C] {class_maps.shape} and logits [B, C] "
                     f"{logits.shape} do not fit together")
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  num_classes = class_maps.shape[-1]
  if method != "threshold" and not 1 <= top_k <= num_classes:
    raise ValueError(f"top_k must be in [1, {num_classes}], got {top_k}")
  maps, logits = class_maps.astype(jnp.float32), logits.astype(jnp.float32)
  if method == "threshold":
    weights = (logits > threshold).astype(jnp.float32)                   # [B, C]
    return _divide_by_max(_upsample(jnp.einsum("bhwc,bc->bhw", jax.nn.relu(maps), weights),
                                    stride, image_size))
  top = jax.lax.top_k(logits, top_k)[1]                                  # [B, k], best first
  selected = jnp.take_along_axis(maps, top[:, None, None, :], axis=-1)   # [B, h, w, k]
  rank = jnp.arange(top_k, dtype=jnp.float32)
  if method == "top5":
    return _divide_by_max(_upsample(jnp.einsum("bhwk,k->bhw", jax.nn.relu(selected),
                                               top_k - rank), stride, image_size))
  weights = 0.5 ** (rank + 1)
  weights = weights.at[-1].set(1.2 * 0.5 ** (top_k - 1))
  per_class = jax.vmap(_min_max, in_axes=-1, out_axes=-1)(
      _upsample(selected, stride, image_size))
  return _min_max(jnp.einsum("bhwk,k->bhw", per_class, weights))


def _network(variables: Any) -> tuple[network.MSROINet, Any]:
  if variables is None:
    model, variables, _ = network.pretrained()
    return model, variables
  return network.from_variables(variables), variables


def _resized_shape(size: tuple[int, int], short_side: int | None) -> tuple[int, int]:
  """(H, W) scaled so that the shorter side is `short_side` (None: unchanged)."""
  if short_side is None:
    return size
  if short_side < 1:
    raise ValueError(f"short_side must be a positive number of pixels, got {short_side}")
  scale = short_side / min(size)
  return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _map(model: network.MSROINet, variables: Any, images: jax.Array, key: jax.Array | None,
         activation_noise: float, dropout_rate: float, short_side: int | None,
         **combine: Any) -> jax.Array:
  size = images.shape[1:3]
  inner = _resized_shape(size, short_side)
  if inner != size:
    images = jax.image.resize(images, (images.shape[0], *inner, images.shape[3]), "linear")
  logits, aux = model.apply(variables, images, key=key, activation_noise=activation_noise,
                            dropout_rate=dropout_rate)
  m = combine_class_maps(aux["class_maps"], logits, image_size=inner, stride=model.stride,
                         **combine)
  return m if inner == size else jnp.clip(
      jax.image.resize(m, (m.shape[0], *size), "linear"), 0.0, 1.0)


def saliency_map(images: jax.Array, *, variables: Any = None, method: str = "top5",
                 threshold: float = 0.0, top_k: int = 5, short_side: int | None = None
                 ) -> jax.Array:
  """MS-ROI map of a batch (Eq. 2.4-2.5; module docstring).

  Args:
    images: [B, H, W, 3] float RGB in [0, 1], any H, W >= 1.
    variables: an `MSROINet`'s variables; None loads the shipped weights
      (`network.pretrained()`).
    method: "top5" (thesis practice, rank-weighted) | "threshold" (Eq. 2.5) |
      "code" (the author's exponential ranking with min-max normalisation).
    threshold: T of "threshold" on the logits `Z_c + b_c`.
    top_k: classes combined by "top5" / "code".
    short_side: run the network on the images resized (bilinear, antialiased
      when shrinking) to this shorter side, and resize the map back (bilinear)
      to [H, W]; None: at full resolution (the thesis). The network finds
      objects at the sizes it was trained on (the shipped weights: 29 to 67
      pixels), so on photos of a few hundred pixels and more a short side near
      the weights' metadata "short_side" is the better setting.

  Returns:
    [B, H, W] float32 saliency in [0, 1] (1 = most salient).
  """
  check_images(images, allow_uint8=False)
  model, variables = _network(variables)
  return _map(model, variables, images, None, 0.0, 0.0, short_side, method=method,
              threshold=threshold, top_k=top_k)


def _shift(x: jax.Array, dy: jax.Array, dx: jax.Array, pad: int) -> jax.Array:
  """`out[:, i, j] = x[:, clip(i + dy), clip(j + dx)]` for |dy|, |dx| <= pad (edge values)."""
  widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 3)
  padded = jnp.pad(x, widths, mode="edge")
  start = (0, pad + dy, pad + dx) + (0,) * (x.ndim - 3)
  return jax.lax.dynamic_slice(padded, start, x.shape)


def aug_msroi_map(images: jax.Array, key: jax.Array, *, variables: Any = None,
                  num_perturbations: int = 5, input_noise: float = 0.02, jitter: int = 8,
                  activation_noise: float = 0.1, dropout_rate: float = 0.0,
                  method: str = "top5", threshold: float = 0.0, top_k: int = 5,
                  short_side: int | None = None) -> jax.Array:
  """Aug-MSROI (Sec. 3.6): the MS-ROI map averaged over random perturbations.

  Each of the `num_perturbations` maps `M~` is computed on the input shifted by a
  random integer offset in [-jitter, jitter]^2 (edge pixels replicated; the map
  is shifted back) plus Gaussian noise, with noisy or dropped-out activations
  (`a_{l+1} = f_l(a_l + Delta)`; `MSROINet`), and selects its own classes. The
  maps are averaged and divided by their maximum. With one perturbation and no
  noise, jitter or dropout this is exactly `saliency_map`.

  Args:
    images: [B, H, W, 3] float RGB in [0, 1].
    key: PRNG key of the perturbations.
    variables: as `saliency_map`.
    num_perturbations: N >= 1 (5 in Table 3.1).
    input_noise: standard deviation of the pixel noise (0.02: the RMSE of the
      thesis's attacks, Sec. 3.7).
    jitter: largest shift in pixels (8: a quarter of the 32-pixel map cell, so
      the maps sample the grid at different phases).
    activation_noise: relative Gaussian noise on every ReLU output.
    dropout_rate: dropout on every ReLU output (the author's code: 0.3).
    method, threshold, top_k, short_side: as `saliency_map` (the jitter and the
      input noise apply to the images before the resize).

  Returns:
    [B, H, W] float32 map in [0, 1].
  """
  check_images(images, allow_uint8=False)
  if num_perturbations < 1 or jitter < 0 or input_noise < 0:
    raise ValueError(f"need num_perturbations >= 1, jitter >= 0, input_noise >= 0; got "
                     f"{num_perturbations}, {jitter}, {input_noise}")
  model, variables = _network(variables)
  single = functools.partial(_map, model, variables, activation_noise=activation_noise,
                             dropout_rate=dropout_rate, short_side=short_side, method=method,
                             threshold=threshold, top_k=top_k)

  def perturbed(k: jax.Array) -> jax.Array:
    k_shift, k_noise, k_act = jax.random.split(k, 3)
    x = images.astype(jnp.float32)
    dy, dx = jax.random.randint(k_shift, (2,), -jitter, jitter + 1)
    if jitter:
      x = _shift(x, dy, dx, jitter)
    if input_noise:
      x = x + input_noise * jax.random.normal(k_noise, x.shape, x.dtype)
    m = single(x, k_act)
    return _shift(m, -dy, -dx, jitter) if jitter else m

  if num_perturbations == 1:
    m = perturbed(key)
    # Unshifted, one map already has maximum 1 (or is all 0): it is its own average.
    return _divide_by_max(m) if jitter else m
  maps = jax.lax.map(perturbed, jax.random.split(key, num_perturbations))
  return _divide_by_max(maps.mean(axis=0))
