"""The JPEG-DL layer's whole map, pixels -> pixels, as one C++ kernel on CPU.

`apply(x, steps, alpha, window, num_candidates)` equals `jpeg_transform.coefficients`,
then `quantization.soft_quantize` once per round, then `jpeg_transform.reconstruct`
(`reference`, the formulation every other platform runs), with its gradients with
respect to the images, the steps and the hardness. On CPU both passes are the FFI
handlers of `csrc/jpeg_dl_layer.cc`: each 8x8 block goes from pixels through the
colour transform, the DCT, the rounds and back in registers (a separable DCT, 16
multiply-adds per coefficient instead of the 64 of the Kronecker product; two
exponentials per 8 coefficients and candidate side instead of L), so no coefficient
array is written to memory but the quantizer's derivatives, which the forward pass
of a differentiated call saves for the backward one (two or three floats per
coefficient and round, as XLA's formulation). Only the gradients asked for are
computed (`jax.custom_vjp`'s symbolic zeros): training the tables alone skips the
image gradient, a fixed alpha its derivative. `layers.jpeg_layer.JpegLayer` selects
it by platform (`apply`).

First derivatives only (the C++ backward pass has no derivative of its own);
`jax.vmap` runs the kernels one mapped entry at a time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcomp.ops import cpu_kernels, dct, jpeg_transform
from jaxcomp.ops.quantization import soft_quantize_window

# The kernel's affine maps pixels -> planes and back (`jpeg_transform`'s).
IN_SCALE, IN_SHIFT = jpeg_transform.PIXEL_SCALE, jpeg_transform.LEVEL_SHIFT
OUT_SCALE, OUT_SHIFT = 1.0 / IN_SCALE, -IN_SHIFT / IN_SCALE


def _target(name: str) -> str | None:
  return cpu_kernels.register("jpeg_dl_layer", f"JaxcompJpegDl{name}")


def available() -> bool:
  """Whether the C++ kernels are built and registered, so CPU runs them."""
  return all(_target(name) is not None for name in ("Forward", "ForwardSave", "Backward"))


def reference(x: jax.Array, steps: jax.Array, alpha: jax.Array, window: jax.Array,
              num_candidates: int, band_size: int | None = None) -> jax.Array:
  """The layer in XLA's ops (module docstring; `apply`'s arguments), any float dtype.

  `band_size`: None quantizes every coefficient in one pass; an integer runs the
  rounds over bands of block rows of at most that many coefficients, in a loop
  (`jpeg_transform.rows_per_band`; same result, bounded temporaries).
  """
  c, height, width = x.shape[-1], x.shape[1], x.shape[2]
  per_block = lambda t: t.astype(x.dtype).reshape(-1, c, 1, 1, 1, 8, 8)   # [R, C, ..., 8, 8]
  steps, alpha, lo, hi = per_block(steps), per_block(alpha), *map(per_block, window)
  rows = jpeg_transform.rows_per_band(x.shape, band_size)

  def quantize_band(z):                      # [(1,) C, rows, B, nw, 8, 8]
    for r in range(steps.shape[0]):
      z = soft_quantize_window(z, steps[r], alpha[r], lo[r], hi[r], num_candidates)
    return z

  z = jpeg_transform.coefficients(x, height, width, rows)      # [bands, C, rows, ...]
  z = quantize_band(z) if z.shape[0] == 1 else lax.map(quantize_band, z)
  return jpeg_transform.reconstruct(z, height, width, rows)


@functools.cache
def _consts(num_channels: int) -> np.ndarray:
  """The kernel's constants: DCT matrix, colour matrix, its inverse, plane offsets."""
  m = jpeg_transform.colour_matrix(num_channels)
  return np.concatenate([dct.dct_matrix(8).ravel(), m.ravel(), np.linalg.inv(m).ravel(),
                         np.asarray(jpeg_transform.CHROMA_OFFSETS[num_channels])]
                        ).astype(np.float32)


def _call(name: str, results, *args, **attrs):
  return jax.ffi.ffi_call(_target(name), results, vmap_method="sequential")(
      *args, in_scale=np.float32(IN_SCALE), in_shift=np.float32(IN_SHIFT),
      out_scale=np.float32(OUT_SCALE), out_shift=np.float32(OUT_SHIFT), **attrs)


def _tables(steps, alpha, window) -> jax.Array:
  """[4, R, C, 8, 8] (q, alpha, lo, hi), each 8x8 table transposed as the kernel holds blocks."""
  return jnp.swapaxes(jnp.concatenate([steps[None], alpha[None], window]), -1, -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _cpu(x: jax.Array, steps: jax.Array, alpha: jax.Array, window: jax.Array,
         num_candidates: int) -> jax.Array:
  return _call("Forward", jax.ShapeDtypeStruct(x.shape, x.dtype), x,
               _tables(steps, alpha, window), _consts(x.shape[-1]),
               num_candidates=np.int64(num_candidates))


def _cpu_fwd(x, steps, alpha, window, num_candidates):
  """The forward pass that also saves the quantizer's derivatives per block and round,
  [B, H/8, C, W/8, R, F, 64]: d/dz, d/dq and, where alpha is differentiated, d/dalpha
  (XLA's formulation saves the three). Which inputs are differentiated is known here
  (`symbolic_zeros`): `want_gx` ([0] or [1] entries) carries whether x is to the
  backward pass, which then skips the image gradient (training the tables alone)."""
  b, h, w, c = x.value.shape
  fields = 3 if alpha.perturbed else 2
  res = (b, -(-h // 8), c, -(-w // 8), steps.value.shape[0], fields, 64)
  y, res = _call("ForwardSave", (jax.ShapeDtypeStruct(x.value.shape, x.value.dtype),
                                 jax.ShapeDtypeStruct(res, x.value.dtype)),
                 x.value, _tables(steps.value, alpha.value, window.value), _consts(c),
                 num_candidates=np.int64(num_candidates))
  return y, (res, jnp.zeros((int(x.perturbed),), x.value.dtype))


def _cpu_bwd(num_candidates, residuals, ct):
  del num_candidates
  res, want_gx = residuals
  b, nh, c, _, rounds, fields, _ = res.shape
  gx_shape = ct.shape if want_gx.shape[0] else (0,)
  gx, parts = _call("Backward", (jax.ShapeDtypeStruct(gx_shape, ct.dtype),
                                 jax.ShapeDtypeStruct((b, nh, fields - 1, rounds, c, 8, 8),
                                                      ct.dtype)),
                    res, _consts(c), ct)
  grads = jnp.swapaxes(parts.sum((0, 1)), -1, -2)         # per image and block row, summed
  return (gx if want_gx.shape[0] else None, grads[0], grads[1] if fields == 3 else None, None)


_cpu.defvjp(_cpu_fwd, _cpu_bwd, symbolic_zeros=True)

# A custom call is not split by XLA's SPMD partitioner (it would gather the batch onto
# every device), so on several CPU devices the XLA formulation runs (tests set this).
KERNEL_ON_MULTI_DEVICE_CPU = False
# The C++ kernel unrolls the quantizer for 1 .. 8 candidates (csrc/jpeg_dl_layer.cc).
MAX_KERNEL_CANDIDATES = 8


def apply(x: jax.Array, steps: jax.Array, alpha: jax.Array, window: jax.Array,
          num_candidates: int, band_size: int | None = None) -> jax.Array:
  """The JPEG-DL layer's map with given per-round tables: C++ on CPU, XLA elsewhere.

  Args:
    x: [B, H, W, C] float images in [0, 1], C = 3 (RGB) or 1 (grey).
    steps: [R, C, 8, 8] quantization steps q per round r and plane c (Y, Cb, Cr).
    alpha: [R, C, 8, 8] the soft quantizer's hardness.
    window: [2, R, C, 8, 8] its index window lo, hi (`quantization.index_window`);
      no gradient reaches it.
    num_candidates: L of the soft quantizer.
    band_size: bounds the XLA formulation's temporaries (`reference`); the C++
      kernel has none.

  Returns:
    [B, H, W, C] in x's dtype, unclamped. The C++ kernel runs for float32 on one
    CPU device where it could be built (`available`), for L <= 8; the XLA
    formulation otherwise.
  """
  r, c = steps.shape[0], x.shape[-1]
  for name, value, shape in (("steps", steps, (r, c, 8, 8)), ("alpha", alpha, (r, c, 8, 8)),
                             ("window", window, (2, r, c, 8, 8))):
    if value.shape != shape:
      raise ValueError(f"{name} must be {list(shape)} for {c} channel(s), got {value.shape}")
  if (x.dtype != jnp.float32 or not available() or num_candidates > MAX_KERNEL_CANDIDATES
      or (jax.device_count() > 1 and not KERNEL_ON_MULTI_DEVICE_CPU)):
    return reference(x, steps, alpha, window, num_candidates, band_size)
  tables = [t.astype(jnp.float32) for t in (steps, alpha, window)]
  return lax.platform_dependent(
      x, *tables, cpu=lambda x, *t: _cpu(x, *t, num_candidates),
      default=lambda x, *t: reference(x, *t, num_candidates, band_size))
