"""The kernel gradient of a 2-D convolution as a JAX primitive that a C++ kernel runs on CPU.

Two primitives on NHWC inputs and HWIO kernels, float32, the geometry as
parameters (`strides`, `padding` as (low, high) pairs, `dilation`):

* `kernel_term_p(x, dk) = conv(x, dk)`, lowered to `lax.conv_general_dilated`
  on every platform;
* `kernel_grad_p(x, g)[i, j, c, o] = sum_{n,p,q} x[n, p*sh + i*dh - ph, q*sw + j*dw - pw, c]
  * g[n, p, q, o]` (zero where x is padding): the gradient of `conv(x, k)` with
  respect to k for the output cotangent g. On CPU it is the FFI handler of
  `csrc/conv_kernel_grad.cc` (per tap, a register-tiled AVX2 contraction over
  the output positions that reads x at a constant offset: no im2col, no shifted
  copies); elsewhere XLA's own kernel gradient.

Both are bilinear and each is the other's transpose in its second argument;
their transposes in x are the convolution's input gradient (`lax`'s). So the
derivatives of every order and the transposes compose (`jax.grad` of a kernel
gradient, forward over reverse, ...), and `vmap` maps the primitives over the
batched axis (`lax.map`: per-example kernel gradients run one example at a time).
`ops.conv.conv_general_dilated` writes its JVP's kernel term with
`kernel_term`, so its kernel gradient is `kernel_grad_p`, where `available()`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxcomp.ops import cpu_kernels

Pairs = tuple[tuple[int, int], tuple[int, int]]
NHWC = ("NHWC", "HWIO", "NHWC")


def _target() -> str | None:
  """The C++ kernel's FFI target name, built and registered on first use (`ops.cpu_kernels`)."""
  return cpu_kernels.register("conv_kernel_grad", "JaxcompConvKernelGrad")


def available() -> bool:
  """Whether the C++ kernel is built and registered, so CPU runs it."""
  return _target() is not None


def _conv(x: jax.Array, k: jax.Array, strides: tuple[int, int], padding: Pairs,
          dilation: tuple[int, int]) -> jax.Array:
  return lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=NHWC)


def _kernel_shape(x, g, kernel_hw):
  return (*kernel_hw, x.shape[-1], g.shape[-1])


def _xla_kernel_grad(x, g, *, strides, padding, dilation, kernel_hw):
  """XLA's kernel gradient: the transpose of `k -> conv(x, k)` at g."""
  k = jax.ShapeDtypeStruct(_kernel_shape(x, g, kernel_hw), x.dtype)
  return jax.linear_transpose(lambda k: _conv(x, k, strides, padding, dilation), k)(g)[0]


def _input_grad(k, ct, x_aval, *, strides, padding, dilation):
  """The transpose of `x -> conv(x, k)` at ct (the convolution's input gradient)."""
  x = jax.ShapeDtypeStruct(x_aval.shape, x_aval.dtype)
  return jax.linear_transpose(lambda x: _conv(x, k, strides, padding, dilation), x)(ct)[0]


kernel_term_p = Primitive("jaxcomp_conv_kernel_term")
kernel_grad_p = Primitive("jaxcomp_conv_kernel_grad")


def _impl(prim, *args, **params):
  return jax.jit(functools.partial(prim.bind, **params))(*args)


def _term_abstract(x, dk, *, strides, padding, dilation):
  shape = jax.eval_shape(functools.partial(_conv, strides=strides, padding=padding,
                                           dilation=dilation), x, dk).shape
  return jax.core.ShapedArray(shape, x.dtype)


def _grad_abstract(x, g, *, strides, padding, dilation, kernel_hw):
  del strides, padding, dilation
  return jax.core.ShapedArray(_kernel_shape(x, g, kernel_hw), x.dtype)


def _term_transpose_x(ct, x, dk, *, strides, padding, dilation):
  return _input_grad(dk, ct, x.aval, strides=strides, padding=padding, dilation=dilation)


def _term_transpose_dk(ct, x, dk, *, strides, padding, dilation):
  return kernel_grad_p.bind(x, ct, strides=strides, padding=padding, dilation=dilation,
                            kernel_hw=dk.aval.shape[:2])


def _grad_transpose_x(ct, x, g, *, strides, padding, dilation, kernel_hw):
  # <kernel_grad(x, g), ct> = <conv(x, ct), g>: the input gradient of conv(., ct) at g.
  del kernel_hw
  return _input_grad(ct, g, x.aval, strides=strides, padding=padding, dilation=dilation)


def _grad_transpose_g(ct, x, g, *, strides, padding, dilation, kernel_hw):
  del g, kernel_hw
  return kernel_term_p.bind(x, ct, strides=strides, padding=padding, dilation=dilation)


def _batch(prim, args, dims, **params):
  """vmap: the mapped axis in front (broadcast where unmapped), one `lax.map` step per entry."""
  size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
  args = tuple(batching.bdim_at_front(a, d, size) for a, d in zip(args, dims))
  return lax.map(lambda xs: prim.bind(*xs, **params), args), 0


def _cpu_lowering(ctx, x, g, *, strides, padding, dilation, kernel_hw):
  target = _target()
  if target is None:  # never bound then (conv.py asks `available()` first); kept correct anyway
    return _xla_lowering(ctx, x, g, strides=strides, padding=padding, dilation=dilation,
                         kernel_hw=kernel_hw)
  return jax.ffi.ffi_lowering(target)(
      ctx, x, g, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
      pad_h=np.int64(padding[0][0]), pad_w=np.int64(padding[1][0]),
      dilation_h=np.int64(dilation[0]), dilation_w=np.int64(dilation[1]))


_xla_lowering = mlir.lower_fun(_xla_kernel_grad, multiple_results=False)

for _prim, _abstract in ((kernel_term_p, _term_abstract), (kernel_grad_p, _grad_abstract)):
  _prim.def_impl(functools.partial(_impl, _prim))
  _prim.def_abstract_eval(_abstract)
  batching.primitive_batchers[_prim] = functools.partial(_batch, _prim)
ad.defbilinear(kernel_term_p, _term_transpose_x, _term_transpose_dk)
ad.defbilinear(kernel_grad_p, _grad_transpose_x, _grad_transpose_g)
mlir.register_lowering(kernel_term_p, mlir.lower_fun(_conv, multiple_results=False))
mlir.register_lowering(kernel_grad_p, _xla_lowering)
mlir.register_lowering(kernel_grad_p, _cpu_lowering, platform="cpu")


def kernel_term(x: jax.Array, dk: jax.Array, strides: tuple[int, int], padding: Pairs,
                dilation: tuple[int, int]) -> jax.Array:
  """`conv(x, dk)` (NHWC x [N, H, W, C], HWIO dk [kh, kw, C, O], float32) -> [N, Ho, Wo, O].

  Its transpose in dk, the kernel gradient, is `kernel_grad_p` (module docstring).
  """
  if x.dtype != jnp.float32 or dk.dtype != jnp.float32:
    raise TypeError(f"kernel_term takes float32 x and dk, got {x.dtype} and {dk.dtype}")
  return kernel_term_p.bind(x, dk, strides=tuple(strides), dilation=tuple(dilation),
                            padding=tuple(tuple(p) for p in padding))
