"""`lax.conv_general_dilated` with gradients that run on XLA:CPU's fast paths.

`conv_general_dilated` takes the arguments of `lax.conv_general_dilated` and
returns the same value with the same derivatives of every order (it is a
`jax.custom_jvp`, so forward mode, reverse mode and their compositions work).
Only the way the two linear terms of its JVP are written differs:

* Input term. JAX writes the input gradient as a convolution whose kernel
  dimension numbers swap input and output features ("01oi"); XLA:CPU turns
  such convolutions into its fast form only at the top level of a program, so
  inside a `while_loop` / `scan` body (every iterative attack) they fall back
  to a naive kernel, ~6x slower for ResNet-20 (jax 0.10.2, 2 cores). The
  tangent is written with an explicitly transposed kernel and relabelled
  dimension numbers, the same convolution, so that its transpose (the input
  gradient) has canonical ones ("01io"). This holds on every backend. On one CPU
  device, a strided convolution's input term is moreover a sum of stride-1
  convolutions, one per stride phase of the input (`_phase_term`): XLA:CPU runs
  the input gradient of a strided convolution as an input-dilated convolution,
  1.4x slower than these stride-1 input gradients (docs/performance.md).
* Kernel term, on CPU only (`lax.platform_dependent`; GPUs and TPUs keep XLA's
  own convolution). JAX's kernel gradient is a convolution whose window is the
  whole output image and whose batch dimension is the input channel
  ("b01f_01io->b01f" with a 32x32 window for CIFAR); XLA:CPU runs it 3-12x
  slower than the forward convolution of the same layer (docs/performance.md).
  Float32 convolutions without feature groups write the tangent `conv(x, dk)`
  as `ops.conv_kernel_grad.kernel_term`, a primitive whose transpose, the
  kernel gradient, is a C++ kernel (register-tiled AVX2, no im2col; built on
  first use, `ops.cpu_kernels`): the ResNet-20 step 1.56x faster than with the
  GEMM forms below. Where that kernel cannot be built (no compiler, not
  x86-64 with AVX2), and for other dtypes and grouped convolutions, the tangent
  is written as matrix products of x with dk, so that its transpose is a GEMM
  over batch x space:
  - "columns" (1x1 kernels, and inputs with at most a quarter of the output's
    channels, e.g. RGB stems): the im2col matrix X [N*Ho*Wo, kh*kw*C] of x,
    `y = X @ dk`, so `dk = X^T g`;
  - "chunked" (all other layers, and grouped / depthwise ones): x split into
    its stride phases `x[:, r_h::s_h, r_w::s_w]` (x itself at stride 1) and
    into chunks of whole images (`CHUNK_BYTES`); per chunk and phase one GEMM
    `Z = K_r x_r^T` gives every tap's contribution on the phase grid, and
    `y = sum_t shift_t(Z_t)`. Transposed, each `lax.scan` step builds the
    shifted copies of its chunk of g (in cache) and contracts them with the
    chunk of x in one GEMM, accumulating dk.
  All three are `jax.checkpoint`ed: only x is kept for the backward pass.
Convolutions with input dilation, batch groups or other than two spatial
dimensions keep XLA's kernel term everywhere.

* Value, on CPU only, for tiny outputs (at most `SMALL_OUTPUT` pixels per image,
  no feature groups: the hyperprior's h_a / h_s on 8x8 latents): the convolution
  itself and its input term are the "columns" GEMM, so that the input gradient
  is a GEMM and a sum of shifted slices. XLA:CPU rewrites such convolutions
  into a batch-minor form that runs a naive loop (2-4 GFLOP/s).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxcomp.ops import chunking, conv_kernel_grad

# Bytes of one chunk's images of x plus the shifted copies of their output
# gradient that the chunked kernel gradient builds: about an L2 cache's worth
# (2 x 512 KiB on the AMD EPYC this was tuned on).
CHUNK_BYTES = 1 << 20
# "columns" replicates x kh*kw times, "chunked" replicates the output gradient;
# columns is used where x has at most 1/COLUMNS_RATIO of the output channels.
COLUMNS_RATIO = 4


class _Taps(NamedTuple):
  """Where kernel taps read one spatial axis of x: tap i, output o -> x[s*(o + q) + r]."""
  index: tuple[int, ...]   # tap indices i whose phase r exists (r < input size)
  offset: tuple[int, ...]  # q
  phase: tuple[int, ...]   # r in [0, stride)


def _axis_taps(size: int, kernel: int, stride: int, dilation: int, pad_lo: int) -> _Taps:
  """Taps of one axis: `dilation * i - pad_lo = stride * q + r` (floor division)."""
  qr = [divmod(dilation * i - pad_lo, stride) for i in range(kernel)]
  keep = [i for i in range(kernel) if qr[i][1] < size]
  return _Taps(tuple(keep), tuple(qr[i][0] for i in keep), tuple(qr[i][1] for i in keep))


class _Geometry(NamedTuple):
  """A 2-D NHWC / HWIO convolution without input dilation or batch groups."""
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  dilation: tuple[int, int]
  groups: int

  def out_size(self, x_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        (x_shape[1 + a] + sum(self.padding[a]) - self.dilation[a] * (k_shape[a] - 1) - 1)
        // self.strides[a] + 1 for a in range(2))


def _columns(x: jax.Array, k_shape: tuple[int, ...], geo: _Geometry) -> jax.Array:
  """im2col: [N, H, W, C] -> [N*Ho*Wo, kh*kw*C], column (i, j, c) = x at tap (i, j)."""
  n, _, _, c = x.shape
  (kh, kw), (sh, sw), (dh, dw) = k_shape[:2], geo.strides, geo.dilation
  ho, wo = geo.out_size(x.shape, k_shape)
  xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0),) + tuple((lo, hi, 0) for lo, hi in
                                                              geo.padding) + ((0, 0, 0),))
  cols = [lax.slice(xp, (0, i * dh, j * dw, 0),
                    (n, i * dh + sh * (ho - 1) + 1, j * dw + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return jnp.concatenate(cols, axis=-1).reshape(n * ho * wo, kh * kw * c)


def _columns_term(x: jax.Array, dk: jax.Array, geo: _Geometry) -> jax.Array:
  """conv(x, dk) as `columns(x) @ dk`; its transpose is `dk = columns(x)^T g`."""
  ho, wo = geo.out_size(x.shape, dk.shape)
  y = jnp.dot(_columns(x, dk.shape, geo), dk.reshape(-1, dk.shape[-1]))
  return y.reshape(x.shape[0], ho, wo, dk.shape[-1])


def _chunk(n: int, bytes_per_image: int) -> int:
  """The largest divisor of n whose images take at most CHUNK_BYTES (at least 1)."""
  return chunking.images_per_chunk(n, bytes_per_image, CHUNK_BYTES)


def _chunked_term(x: jax.Array, dk: jax.Array, geo: _Geometry) -> jax.Array:
  """conv(x, dk) as per-phase GEMMs over chunks of images plus shifts (module docstring).

  The scan body applies no operation to its slice of x but the GEMM, so that
  JAX's transposition of the scan keeps no per-chunk residuals.
  """
  n, h, w, c = x.shape
  kh, kw, cg, o = dk.shape
  g = geo.groups
  og = o // g
  ho, wo = geo.out_size(x.shape, dk.shape)
  rows, cols = (_axis_taps(size, k, s, d, pad[0]) for size, k, s, d, pad in zip(
      (h, w), (kh, kw), geo.strides, geo.dilation, geo.padding))
  phases: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
  for i, qi, ri in zip(*rows):
    for j, qj, rj in zip(*cols):
      phases.setdefault((ri, rj), []).append((i, j, qi, qj))
  grid = {r: (len(range(r[0], h, geo.strides[0])), len(range(r[1], w, geo.strides[1])))
          for r in phases}
  taps = sum(len(t) * grid[r][0] * grid[r][1] for r, t in phases.items())
  chunk = _chunk(n, x.dtype.itemsize * (h * w * c + o * taps))
  nch = n // chunk

  def split(xr: jax.Array) -> jax.Array:  # [n, hr, wr, c] -> [nch, (G,) chunk*hr*wr, cg]
    if g == 1:
      return xr.reshape(nch, -1, c)
    return xr.reshape(nch, -1, g, cg).transpose(0, 2, 1, 3)

  xs = [split(x[:, r[0]::geo.strides[0], r[1]::geo.strides[1]]) for r in phases]
  # Per phase: [(G,) T*og, cg], rows (tap, output channel of the group).
  ks = [jnp.stack([dk[i, j] for i, j, _, _ in t]).reshape(len(t), cg, g, og)
        .transpose(2, 0, 3, 1).reshape((g,) * (g > 1) + (len(t) * og, cg)) for t in phases.values()]
  spec = "gkc,glc->gkl" if g > 1 else "kc,lc->kl"

  def body(xs_chunk: list[jax.Array]) -> jax.Array:  # -> [o, chunk, ho, wo]
    y = None
    for xr, kr, (r, t) in zip(xs_chunk, ks, phases.items()):
      hr, wr = grid[r]
      z = jnp.einsum(spec, kr, xr).reshape(g, len(t), og * chunk * hr * wr)
      for zt, (_, _, qi, qj) in zip(lax.split(z, [1] * len(t), axis=1), t):
        zt = lax.pad(zt.reshape(o, chunk, hr, wr), jnp.zeros((), z.dtype),
                     ((0, 0, 0),) * 2 + ((-qi, ho - hr + qi, 0), (-qj, wo - wr + qj, 0)))
        y = zt if y is None else y + zt
    return y

  if nch == 1:
    ys = body([xr[0] for xr in xs])[None]
  else:
    ys = lax.scan(lambda _, xs_chunk: (None, body(xs_chunk)), None, xs)[1]
  return ys.transpose(0, 2, 3, 4, 1).reshape(n, ho, wo, o)


def _uses_columns(k_shape: tuple[int, ...], groups: int) -> bool:
  """Whether the HWIO kernel's gradient takes the "columns" form (else "chunked")."""
  kh, kw, cg, o = k_shape
  return groups == 1 and (kh * kw == 1 or COLUMNS_RATIO * cg <= o)


def _uses_cpp_kernel(dtype: Any, geo: _Geometry) -> bool:
  """Whether the kernel gradient is `ops.conv_kernel_grad`'s C++ kernel (else a GEMM form)."""
  return dtype == jnp.float32 and geo.groups == 1 and conv_kernel_grad.available()


def _cpu_kernel_term(x: jax.Array, dk: jax.Array, *, geo: _Geometry,
                     dn: lax.ConvDimensionNumbers, out_dtype: Any,
                     columns: bool = False) -> jax.Array:
  """conv(x, dk) in the layouts of `dn`: the "columns" GEMM form where `columns`, else the
  C++ kernel's primitive where it applies, else the layer's GEMM form."""
  x = jnp.transpose(x, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
  dk = jnp.transpose(dk, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
  dtype = jnp.promote_types(jnp.result_type(x, dk), jnp.float32)  # accumulate in >= float32
  x, dk = x.astype(dtype), dk.astype(dtype)
  if columns:
    y = _columns_term(x, dk, geo)
  elif _uses_cpp_kernel(dtype, geo):
    y = conv_kernel_grad.kernel_term(x, dk, geo.strides, geo.padding, geo.dilation)
  else:
    term = _columns_term if _uses_columns(dk.shape, geo.groups) else _chunked_term
    y = term(x, dk, geo)
  nhwc = (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])
  return jnp.transpose(y, np.argsort(nhwc)).astype(out_dtype)


# With several XLA:CPU devices (the host-platform devices the tests and dry runs
# use), an 8-device train step whose convolutions used the GEMM forms hit XLA's
# collective-rendezvous timeout on 2 cores and aborted (jax 0.10.2, ResNet-32 with
# sharded parameters: tests/configs/jpeg_dl_config_test.py), so there the kernel
# term stays XLA's (neither the GEMM forms nor the C++ kernel, which was not
# re-tested there); real CPU training runs on one device. Tests of the forms
# themselves set this to True.
GEMM_ON_MULTI_DEVICE_CPU = False


# XLA:CPU runs convolutions with fewer output channels than this at 10-20 GFLOP/s (a
# layer to RGB; ~110 with 128): forms that would make such convolutions are avoided
# (`_uses_phases`, `ops.conv_transpose`).
NARROW_CHANNELS = 8


# Convolutions with at most this many output pixels per image (Ho * Wo) are, on one CPU
# device, im2col + one GEMM in value and input gradient (the kernel gradient stays the
# C++ kernel's): XLA:CPU rewrites such tiny
# convolutions (a 5x5 window over a 2x2 or 4x4 output, the input gradient of a stride-2
# layer onto 8x8) into a batch-minor form ("01fb_o01i->f01b") that runs a naive loop,
# 2-4 GFLOP/s: 104 ms of the hyperprior's ~850 ms training step went to six of them
# (docs/performance.md).
SMALL_OUTPUT = 16


def _small_output(geo: _Geometry | None, dn: lax.ConvDimensionNumbers,
                  x_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> bool:
  """Whether a convolution's value is the "columns" GEMM form on one CPU device
  (`SMALL_OUTPUT`)."""
  if geo is None or geo.groups != 1:
    return False
  ho, wo = _out_size(geo, dn, x_shape, k_shape)
  return ho * wo <= SMALL_OUTPUT


def _out_size(geo: _Geometry, dn: lax.ConvDimensionNumbers, x_shape: tuple[int, ...],
              k_shape: tuple[int, ...]) -> tuple[int, int]:
  """(Ho, Wo) of the convolution of x and k, shapes in the layouts of `dn`."""
  x_nhwc = tuple(x_shape[d] for d in (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
  k_hwio = tuple(k_shape[d] for d in (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
  return geo.out_size(x_nhwc, k_hwio)


def _on_one_cpu(conv: Callable[..., jax.Array], dn: lax.ConvDimensionNumbers, x: jax.Array,
                k: jax.Array, *, geo: _Geometry, columns: bool) -> jax.Array:
  """`conv(x, k)`; on one CPU device `_cpu_kernel_term` instead (`jax.checkpoint`ed: only
  x is kept for the backward pass)."""
  xla = lambda x, k: conv(x, k, dimension_numbers=dn)
  out_dtype = jax.eval_shape(xla, x, k).dtype
  cpu = jax.checkpoint(functools.partial(_cpu_kernel_term, geo=geo, dn=dn, out_dtype=out_dtype,
                                         columns=columns))
  return _cpu_or(xla, cpu, x, k)


def _cpu_or(default: Callable[..., jax.Array], cpu: Callable[..., jax.Array], x: jax.Array,
            k: jax.Array) -> jax.Array:
  """`default(x, k)`; on one CPU device `cpu(x, k)` (`lax.platform_dependent`)."""
  if jax.device_count() > 1 and not GEMM_ON_MULTI_DEVICE_CPU:
    return default(x, k)
  return lax.platform_dependent(x, k, cpu=cpu, default=default)


def _uses_phases(geo: _Geometry | None, plain_value: bool, in_channels: int) -> bool:
  """Whether the input term is `_phase_term` on one CPU device: strided, undilated
  convolutions whose value is XLA's (not the `SMALL_OUTPUT` columns form), of inputs
  with at least `NARROW_CHANNELS` channels (the phases' input gradients have as many
  output channels)."""
  return (geo is not None and plain_value and geo.strides != (1, 1)
          and geo.dilation == (1, 1) and in_channels >= NARROW_CHANNELS)


def _phase_term(conv_with: Callable[..., jax.Array], geo: _Geometry,
                dn: lax.ConvDimensionNumbers, out_dim: int, in_dim: int, dx: jax.Array,
                k: jax.Array) -> jax.Array:
  """The strided convolution `conv(dx, k)` as a sum of stride-1 convolutions, one per
  stride phase of dx; `dn` labels the kernel with its feature axes swapped (as the
  plain input term does).

  Tap i of an axis reads `dx[s*(o + q) + r]` (`_axis_taps`): the taps of phase r are
  every s-th tap (a strided slice of k) with consecutive q, so phase r contributes a
  stride-1 convolution of `dx[r::s]` padded by (-q_first, Ho - 1 + q_last - (len - 1))
  (negative padding crops). Its transpose, the input gradient, is stride-1 input
  gradients and an interleave: XLA:CPU runs the input gradient of a strided
  convolution as an input-dilated convolution through a slow path (the hyperprior's
  g_a 5x5 stride-2 128 -> 128 layer at 64^2: 80.4 -> 57.1 ms, docs/performance.md).
  """
  lhs_axes, rhs_axes = dn.lhs_spec[2:], dn.rhs_spec[2:]
  out_size = _out_size(geo, dn, dx.shape, k.shape)   # only k's spatial axes are read
  axes = [_axis_taps(dx.shape[a], k.shape[b], s, 1, pad[0])
          for a, b, s, pad in zip(lhs_axes, rhs_axes, geo.strides, geo.padding)]
  k = jnp.swapaxes(k, out_dim, in_dim)
  terms = []
  for r in np.ndindex(*geo.strides):
    x_r, k_r, pads = dx, k, []
    for a, b, s, taps, r_a, o_a in zip(lhs_axes, rhs_axes, geo.strides, axes, r, out_size):
      mine = [(i, q) for i, q, ph in zip(*taps) if ph == r_a]
      if not mine:
        break
      x_r = lax.slice_in_dim(x_r, r_a, None, s, axis=a)
      k_r = lax.slice_in_dim(k_r, mine[0][0], mine[-1][0] + 1, s, axis=b)
      pads.append((-mine[0][1], o_a - 1 + mine[-1][1] - (x_r.shape[a] - 1)))
    else:
      terms.append(conv_with(x_r, k_r, window_strides=(1, 1), padding=tuple(pads),
                             rhs_dilation=(1, 1), dimension_numbers=dn))
  if not terms:  # no tap reads dx (an input smaller than the stride): all padding
    return conv_with(dx, k, window_strides=geo.strides, padding=geo.padding,
                     rhs_dilation=(1, 1), dimension_numbers=dn)
  return sum(terms[1:], terms[0])


def _kernel_term(conv: Callable[..., jax.Array], geo: _Geometry | None,
                 dn: lax.ConvDimensionNumbers, x: jax.Array, dk: jax.Array) -> jax.Array:
  """`conv(x, dk)`, linear in dk; on one CPU device in a form whose transpose is fast (C++ / GEMM)."""
  if geo is None:
    return conv(x, dk, dimension_numbers=dn)
  return _on_one_cpu(conv, dn, x, dk, geo=geo, columns=False)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any,
                         lhs_dilation: Any = None, rhs_dilation: Any = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` whose input and kernel gradients run fast on XLA:CPU.

  Same arguments, value and derivatives (to float rounding: sums are taken in
  another order); see the module docstring for what changes and where. A
  drop-in for flax's `nn.Conv(..., conv_general_dilated=conv_general_dilated)`.

  Args:
    lhs: input, e.g. [N, H, W, C] float for "NHWC".
    rhs: kernel, e.g. [kh, kw, C / feature_group_count, O] for "HWIO".
    window_strides, padding ("SAME", "VALID" or (low, high) pairs), lhs_dilation,
      rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
      precision, preferred_element_type: as in `lax.conv_general_dilated`.

  Returns:
    `lax.conv_general_dilated(lhs, rhs, ...)`, e.g. [N, Ho, Wo, O].
  """
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  spatial = lhs.ndim - 2
  window_strides = tuple(window_strides)
  lhs_dilation = (1,) * spatial if lhs_dilation is None else tuple(lhs_dilation)
  rhs_dilation = (1,) * spatial if rhs_dilation is None else tuple(rhs_dilation)
  if isinstance(padding, str):
    if any(d != 1 for d in lhs_dilation):
      raise ValueError(f"string padding {padding!r} needs lhs_dilation 1, got {lhs_dilation}")
    kernel = [(k - 1) * d + 1 for k, d in zip(np.take(rhs.shape, dn.rhs_spec)[2:], rhs_dilation)]
    padding = lax.padtype_to_pads(np.take(lhs.shape, dn.lhs_spec)[2:], kernel, window_strides,
                                  padding)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  conv_with = functools.partial(  # the convolution, stride and padding left open
      lax.conv_general_dilated, lhs_dilation=lhs_dilation,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  conv = functools.partial(conv_with, window_strides=window_strides, padding=padding,
                           rhs_dilation=rhs_dilation)
  fast_kernel = spatial == 2 and batch_group_count == 1 and lhs_dilation == (1, 1)
  geo = _Geometry(window_strides, padding, rhs_dilation, feature_group_count) if fast_kernel \
      else None
  out_dim, in_dim = dn.rhs_spec[:2]
  swapped = lax.ConvDimensionNumbers(dn.lhs_spec, (in_dim, out_dim) + dn.rhs_spec[2:],
                                     dn.out_spec)

  value = conv
  if _small_output(geo, dn, lhs.shape, rhs.shape):
    value = lambda x, k, dimension_numbers: _on_one_cpu(conv, dimension_numbers, x, k, geo=geo,
                                                        columns=True)

  @jax.custom_jvp
  def f(x, k):
    return value(x, k, dimension_numbers=dn)

  def f_jvp(primals, tangents):
    x, k = primals
    dx, dk = tangents
    terms = []
    if not isinstance(dx, SymbolicZero):  # the same convolution, kernel axes relabelled
      relabelled = lambda dx, k: value(dx, jnp.swapaxes(k, out_dim, in_dim),
                                       dimension_numbers=swapped)
      if _uses_phases(geo, value is conv, lhs.shape[dn.lhs_spec[1]]):
        phases = functools.partial(_phase_term, conv_with, geo, swapped, out_dim, in_dim)
        terms.append(_cpu_or(relabelled, phases, dx, k))
      else:
        terms.append(relabelled(dx, k))
    if not isinstance(dk, SymbolicZero):
      terms.append(_kernel_term(conv, geo, dn, x, dk))
    y = f(x, k)
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)

  f.defjvp(f_jvp, symbolic_zeros=True)
  return f(lhs, rhs)
