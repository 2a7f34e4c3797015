"""Pixel moves + Haar wavelet shrinkage of RGB images as one C++ kernel on CPU.

The pixel-deflection defense (`defenses.pd_rcam_dwt`) and `defenses.denoise_wavelet`
with the Haar wavelet ("db1" / "haar") are ~20 elementwise passes, reductions and
colour conversions in XLA, each a pass over the batch. On one CPU device in float32
`apply` runs them as the FFI handler of `csrc/haar_shrink.cc` instead: per image,
the rows are read once (moved pixels patched in), transformed while in cache,
thresholded, transformed back and written once (see the source for the maths). The
caller's `reference` (the same map in XLA ops) runs on every other platform, and
its VJP is the kernel's: gradients are exact and cost what XLA's do.

`jax.vmap` runs the kernel one mapped entry at a time.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcomp.ops import cpu_kernels

# A custom call is not split by XLA's SPMD partitioner (it would gather the batch onto
# every device), so on several CPU devices the XLA formulation runs (tests set this).
KERNEL_ON_MULTI_DEVICE_CPU = False

Reference = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Shrinkage:
  """What the kernel computes after the pixel moves (`csrc/haar_shrink.cc`).

  sigma: noise standard deviation per plane, in the planes' units (3 floats).
  levels: DWT levels. ycbcr: planes = colour @ rgb + offset, each plane's range
  scaling the variance floor, a constant plane left as is (`denoise_wavelet`'s
  rescaling to [0, 1]); else planes = rgb. colour, offset: the 3x3 matrix and
  offsets (used when ycbcr). method: "BayesShrink" or "VisuShrink". mode: "soft" or
  "hard". clip: clip the result to [0, 1].
  """
  sigma: tuple[float, float, float]
  levels: int
  ycbcr: bool
  colour: tuple[float, ...]
  offset: tuple[float, float, float]
  method: str
  mode: str
  clip: bool

  def consts(self) -> np.ndarray:
    """The kernel's [27] constants: sigma, M, off, M^-1, -M^-1 off."""
    m = np.asarray(self.colour, np.float64).reshape(3, 3)
    off = np.asarray(self.offset, np.float64)
    minv = np.linalg.inv(m)
    return np.concatenate([self.sigma, m.ravel(), off, minv.ravel(), -minv @ off]
                          ).astype(np.float32)


def _target() -> str | None:
  return cpu_kernels.register("haar_shrink", "JaxcompHaarShrink")


def available() -> bool:
  """Whether the C++ kernel is built and registered, so CPU runs it."""
  return _target() is not None


def supported(shape: tuple[int, ...], dtype, levels: int) -> bool:
  """Whether `apply` runs the kernel (on CPU) for images of this shape and dtype."""
  return (len(shape) == 4 and shape[-1] == 3 and dtype == jnp.float32 and levels >= 1
          and shape[1] % 2 ** levels == 0 and shape[2] % 2 ** levels == 0 and available()
          and (jax.device_count() == 1 or KERNEL_ON_MULTI_DEVICE_CPU))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _cpu(x: jax.Array, dest: jax.Array, src: jax.Array, config: Shrinkage,
         reference: Reference) -> jax.Array:
  del reference
  return jax.ffi.ffi_call(_target(), jax.ShapeDtypeStruct(x.shape, x.dtype),
                          vmap_method="sequential")(
      x, dest, src, config.consts(), levels=np.int64(config.levels),
      ycbcr=np.int64(config.ycbcr), bayes=np.int64(config.method == "BayesShrink"),
      soft=np.int64(config.mode == "soft"), clip=np.int64(config.clip),
      eps=np.float32(np.finfo(np.float32).eps))


def _cpu_fwd(x, dest, src, config, reference):
  return _cpu(x, dest, src, config, reference), (x, dest, src)


def _cpu_bwd(config, reference, residuals, ct):
  del config
  x, dest, src = residuals
  _, vjp = jax.vjp(lambda x: reference(x, dest, src), x)
  return vjp(ct)[0], None, None


_cpu.defvjp(_cpu_fwd, _cpu_bwd)


def apply(x: jax.Array, dest: jax.Array, src: jax.Array, config: Shrinkage,
          reference: Reference) -> jax.Array:
  """Moves pixels, then shrinks the Haar details: the C++ kernel on CPU, `reference` elsewhere.

  Args:
    x: [B, H, W, 3] float32 RGB images, `supported(x.shape, x.dtype, config.levels)`.
    dest, src: [B, K] integer flat pixel indices: pixel dest[k] of an image takes the
      value of its input pixel src[k], k in order (the last write wins); a move whose
      dest or src lies outside [0, H W) moves nothing (`pixel_deflection.move_pixels`).
    config: the shrinkage (`Shrinkage`).
    reference: `(x, dest, src) -> y`, the same map in XLA ops.

  Returns:
    [B, H, W, 3] float32.
  """
  if not supported(x.shape, x.dtype, config.levels):
    raise ValueError(f"the Haar shrinkage kernel does not take images {x.shape} {x.dtype} "
                     f"at {config.levels} levels (check `supported` first)")
  if dest.shape != src.shape or dest.shape[:1] != x.shape[:1] or dest.ndim != 2:
    raise ValueError(f"dest and src must be [B, K] for B = {x.shape[0]}, got {dest.shape}, "
                     f"{src.shape}")
  dest, src = dest.astype(jnp.int32), src.astype(jnp.int32)
  return lax.platform_dependent(
      x, dest, src, cpu=lambda *a: _cpu(*a, config, reference), default=reference)
