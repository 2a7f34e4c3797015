"""The C++ kernel gradient (ops.conv_kernel_grad) and its build (ops.cpu_kernels).

The kernel's value is compared with XLA's kernel gradient (the transpose of
`lax.conv_general_dilated` in its kernel) on geometries chosen to reach every
branch of csrc/conv_kernel_grad.cc: input-channel tiles of 6 and shorter ones,
output-channel tiles of 32 / 16 / 8 and the masked remainder, the narrow tiles
(O < 8: 32 / 16 / 8 input channels x 3 / 2 / 1 outputs), several blocks of
output rows per image, one and two threads, taps that fall wholly in the padding,
negative padding, dilation and strides. Tolerance: 1e-5 of the largest entry
(float32 sums in another order). `ops/conv_test.py` checks the derivatives of
every order through `ops.conv.conv_general_dilated` against lax's.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcomp.ops import conv_kernel_grad, cpu_kernels


@pytest.fixture(autouse=True)
def _needs_the_kernel():
  if not conv_kernel_grad.available():
    pytest.skip("the C++ kernel could not be built here (ops.cpu_kernels warned why)")


# (id, x shape NHWC, kernel (kh, kw), out channels, strides, padding, dilation)
GEOMETRIES = [
    ("tiles_6_6_1_o_16_16_masked5", (2, 9, 11, 13), (3, 3), 37, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("rgb_o_32_8", (2, 12, 12, 3), (5, 5), 40, (2, 2), ((2, 2), (2, 2)), (1, 1)),
    ("masked_only_o6", (3, 17, 13, 4), (3, 2), 6, (2, 3), ((-1, 2), (3, -1)), (3, 2)),
    ("row_blocks_one_image", (1, 40, 64, 8), (3, 3), 256, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("many_images_two_threads", (64, 16, 16, 16), (3, 3), 32, (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ("taps_in_padding", (2, 3, 3, 5), (7, 7), 8, (1, 1), ((4, 4), (4, 4)), (1, 1)),
    ("stride3_dilated", (2, 20, 19, 7), (3, 3), 24, (3, 3), ((2, 0), (0, 2)), (2, 2)),
    ("pointwise_s2", (4, 8, 8, 16), (1, 1), 32, (2, 2), ((0, 0), (0, 0)), (1, 1)),
    # Narrow outputs (O < 8, C a multiple of 8): vectors over C, a transposed dk.
    ("narrow_rgb_c32_16_8", (2, 10, 9, 56), (3, 2), 3, (1, 1), ((1, 1), (0, 1)), (1, 1)),
    ("narrow_o5_helpers", (16, 24, 24, 128), (3, 3), 5, (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ("narrow_o1_dilated", (2, 11, 12, 8), (3, 3), 1, (1, 1), ((2, 2), (2, 2)), (2, 2)),
]


def _operands(x_shape, kernel_hw, out_channels, strides, padding, dilation):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
  k = jax.ShapeDtypeStruct((*kernel_hw, x_shape[-1], out_channels), jnp.float32)
  y = jax.eval_shape(lambda x, k: conv_kernel_grad._conv(x, k, strides, padding, dilation), x, k)  # pylint: disable=protected-access
  g = jnp.asarray(rng.standard_normal(y.shape, np.float32))
  return x, g


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
def test_kernel_equals_xla_kernel_gradient(geometry):
  _, x_shape, kernel_hw, out_channels, strides, padding, dilation = geometry
  x, g = _operands(x_shape, kernel_hw, out_channels, strides, padding, dilation)
  params = dict(strides=strides, padding=padding, dilation=dilation, kernel_hw=kernel_hw)
  ours = jax.jit(lambda x, g: conv_kernel_grad.kernel_grad_p.bind(x, g, **params))(x, g)
  xla = jax.jit(lambda x, g: conv_kernel_grad._xla_kernel_grad(x, g, **params))(x, g)  # pylint: disable=protected-access
  assert ours.shape == (*kernel_hw, x_shape[-1], out_channels)
  lowered = jax.jit(lambda x, g: conv_kernel_grad.kernel_grad_p.bind(x, g, **params)).lower(x, g)
  assert "custom_call @jaxcomp_JaxcompConvKernelGrad" in lowered.as_text()
  np.testing.assert_allclose(np.asarray(ours), np.asarray(xla), rtol=0,
                             atol=1e-5 * float(np.max(np.abs(xla))))


def test_eager_call_equals_jitted():
  _, x_shape, kernel_hw, out_channels, strides, padding, dilation = GEOMETRIES[0]
  x, g = _operands(x_shape, kernel_hw, out_channels, strides, padding, dilation)
  params = dict(strides=strides, padding=padding, dilation=dilation, kernel_hw=kernel_hw)
  eager = conv_kernel_grad.kernel_grad_p.bind(x, g, **params)
  jitted = jax.jit(lambda x, g: conv_kernel_grad.kernel_grad_p.bind(x, g, **params))(x, g)
  np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


def test_repeated_calls_are_bitwise_equal():
  """Slots of items are summed in a fixed order, whichever thread ran them."""
  _, x_shape, kernel_hw, out_channels, strides, padding, dilation = GEOMETRIES[4]  # helpers
  x, g = _operands(x_shape, kernel_hw, out_channels, strides, padding, dilation)
  params = dict(strides=strides, padding=padding, dilation=dilation, kernel_hw=kernel_hw)
  fn = jax.jit(lambda x, g: conv_kernel_grad.kernel_grad_p.bind(x, g, **params))
  first = np.asarray(fn(x, g))
  for _ in range(4):
    np.testing.assert_array_equal(np.asarray(fn(x, g)), first)


def test_derivatives_of_the_kernel_term_match_finite_differences():
  # kernel_term(x, dk) = conv(x, dk); its reverse mode in dk is the C++ kernel, in x
  # lax's input gradient; orders 1 and 2, forward and reverse, against central
  # differences (float32: check_grads' tolerances for it; inputs scaled so the
  # convolution is O(1): at O(10) lax's own convolution misses them at order 2).
  rng = np.random.default_rng(1)
  x = 0.3 * jnp.asarray(rng.standard_normal((2, 6, 5, 3), np.float32))
  dk = 0.3 * jnp.asarray(rng.standard_normal((3, 3, 3, 10), np.float32))
  term = lambda x, dk: jnp.sin(conv_kernel_grad.kernel_term(  # noqa: E731
      x, dk, (2, 1), ((1, 1), (0, 2)), (1, 2)))
  check_grads(term, (x, dk), order=2, modes=("fwd", "rev"), eps=1e-2)


def test_kernel_term_rejects_other_dtypes():
  x = jnp.zeros((1, 4, 4, 2), jnp.bfloat16)
  with pytest.raises(TypeError, match="float32"):
    conv_kernel_grad.kernel_term(x, jnp.zeros((3, 3, 2, 8), jnp.float32), (1, 1),
                                 ((1, 1), (1, 1)), (1, 1))


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
  """`cpu_kernels.load` without its cache, building into an empty folder."""
  monkeypatch.setenv("JAXCOMP_KERNEL_DIR", str(tmp_path))
  cpu_kernels.load.cache_clear()
  yield cpu_kernels.load
  cpu_kernels.load.cache_clear()


def test_build_writes_one_library_and_reuses_it(fresh_load, tmp_path):
  lib = fresh_load("conv_kernel_grad")
  assert lib is not None and hasattr(lib, "JaxcompConvKernelGrad")
  built = list(pathlib.Path(tmp_path).iterdir())
  assert len(built) == 1 and built[0].suffix == ".so" and not built[0].name.startswith(".")
  mtime = os.stat(built[0]).st_mtime_ns
  fresh_load.cache_clear()
  assert fresh_load("conv_kernel_grad") is not None
  assert list(pathlib.Path(tmp_path).iterdir()) == built and os.stat(built[0]).st_mtime_ns == mtime


def test_failed_build_warns_leaves_nothing_and_returns_none(fresh_load, tmp_path, monkeypatch):
  monkeypatch.setenv("CXX", "false")  # a "compiler" that fails
  with pytest.warns(RuntimeWarning, match="building it failed"):
    assert fresh_load("conv_kernel_grad") is None
  assert not list(pathlib.Path(tmp_path).iterdir())


def test_switched_off_by_the_environment(fresh_load, monkeypatch):
  monkeypatch.setenv("JAXCOMP_CPU_KERNELS", "0")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert fresh_load("conv_kernel_grad") is None
