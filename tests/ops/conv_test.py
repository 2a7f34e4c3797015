"""jaxcomp.ops.conv.conv_general_dilated has lax.conv_general_dilated's value and derivatives.

The reference is JAX's own differentiation of `lax.conv_general_dilated`
(`jax.vjp` / `jax.jvp` of it). Float32; both CPU forms of the kernel
gradient (the C++ kernel of ops.conv_kernel_grad and the GEMM formulations)
sum the same products in another order, so values agree to ~1e-7 relative to
the largest entry; the tolerance is 1e-5 of it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcomp.models import common
from jaxcomp.ops import conv as conv_lib
from jaxcomp.ops import conv_kernel_grad
from jaxcomp.ops.conv import conv_general_dilated

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def _gemm_forms_on_the_test_devices(monkeypatch):
  # The suite runs with 8 host-platform devices, where the library keeps XLA's
  # kernel term (conv.GEMM_ON_MULTI_DEVICE_CPU); these tests check the CPU forms.
  monkeypatch.setattr(conv_lib, "GEMM_ON_MULTI_DEVICE_CPU", True)


# The two CPU kernel-gradient forms: the C++ kernel (ops.conv_kernel_grad) where
# it is built, the GEMM forms (columns / chunked) where it is not.
FORMS = ["cpp", "gemm"]


def _use_form(form: str, monkeypatch) -> None:
  if form == "gemm":
    monkeypatch.setattr(conv_kernel_grad, "available", lambda: False)
  elif not conv_kernel_grad.available():
    pytest.skip("the C++ kernel could not be built here (ops.cpu_kernels warned why)")


@pytest.fixture(params=FORMS)
def form(request, monkeypatch) -> str:
  _use_form(request.param, monkeypatch)
  return request.param


@pytest.fixture
def gemm(monkeypatch) -> None:
  """Tests of the GEMM forms' own machinery (chunks, scan steps)."""
  _use_form("gemm", monkeypatch)

# (id, input shape, kernel shape, keyword arguments): the geometries of the zoo
# (jaxcomp/models), the codecs (jaxcomp/codecs/learned.py) and the stride-1
# convolutions of ops.conv_transpose, NHWC / HWIO unless stated.
SAME1 = ((1, 1), (1, 1))
CASES = [
    ("resnet3x3", (4, 8, 8, 8), (3, 3, 8, 8), dict(window_strides=(1, 1), padding=SAME1)),
    ("resnet3x3s2", (4, 9, 8, 8), (3, 3, 8, 16), dict(window_strides=(2, 2), padding=SAME1)),
    ("projection1x1s2", (4, 8, 8, 8), (1, 1, 8, 16), dict(window_strides=(2, 2), padding="VALID")),
    ("pointwise1x1", (4, 6, 6, 8), (1, 1, 8, 6), dict(window_strides=(1, 1), padding="VALID")),
    ("rgb_stem", (4, 8, 8, 3), (3, 3, 3, 16), dict(window_strides=(1, 1), padding=SAME1)),
    ("stem7x7s2", (2, 16, 16, 3), (7, 7, 3, 16), dict(window_strides=(2, 2), padding=((3, 3),) * 2)),
    ("depthwise3x3", (4, 8, 8, 8), (3, 3, 1, 8), dict(window_strides=(1, 1), padding=SAME1,
                                                      feature_group_count=8)),
    ("depthwise3x3s2_x2", (4, 9, 9, 8), (3, 3, 1, 16), dict(window_strides=(2, 2), padding=SAME1,
                                                            feature_group_count=8)),
    ("groups4_odd_pad", (3, 9, 10, 8), (3, 3, 2, 12),
     dict(window_strides=(2, 2), padding=((0, 1), (2, 0)), feature_group_count=4)),
    ("dilated_same", (3, 9, 10, 8), (3, 3, 8, 12), dict(window_strides=(1, 1), padding="SAME",
                                                        rhs_dilation=(2, 2))),
    ("codec5x5s2_rgb", (2, 16, 16, 3), (5, 5, 3, 16), dict(window_strides=(2, 2), padding="SAME")),
    ("codec5x5s2", (2, 16, 16, 8), (5, 5, 8, 8), dict(window_strides=(2, 2), padding="SAME")),
    ("codec9x9s4", (2, 16, 16, 4), (9, 9, 4, 6), dict(window_strides=(4, 4), padding="SAME")),
    ("transpose5x5s2_as_3x3", (2, 6, 6, 8), (3, 3, 8, 32), dict(window_strides=(1, 1), padding=SAME1)),
    ("transpose_to_rgb", (2, 6, 6, 8), (3, 3, 8, 12), dict(window_strides=(1, 1), padding=SAME1)),
    ("negative_pad_mixed", (3, 17, 13, 4), (3, 2, 4, 6),
     dict(window_strides=(2, 3), padding=((-1, 2), (3, -1)), rhs_dilation=(3, 2))),
    ("nchw_oihw", (3, 4, 9, 10), (12, 4, 3, 3), dict(window_strides=(2, 2), padding=SAME1,
                                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))),
    # Strided convolutions of inputs with >= conv.NARROW_CHANNELS channels: on CPU their
    # input term is a sum of stride-1 convolutions, one per stride phase (_phase_term).
    ("codec5x5s2_nchw", (2, 8, 15, 16), (8, 8, 5, 5), dict(window_strides=(2, 2), padding="SAME",
                                                          dimension_numbers=("NCHW", "OIHW", "NCHW"))),
    ("stride4_9x9", (2, 18, 16, 8), (9, 9, 8, 6), dict(window_strides=(4, 4), padding="SAME")),
    ("strided_negative_pad", (3, 17, 13, 8), (3, 2, 8, 6),
     dict(window_strides=(2, 3), padding=((-1, 2), (3, -1)))),
    # No tap reads the input (all padding; more than SMALL_OUTPUT output pixels).
    ("input_below_stride", (2, 1, 1, 8), (1, 1, 8, 8), dict(window_strides=(2, 2),
                                                            padding=((9, 9), (9, 9)))),
    # The hyperprior's h_a on 8x8 latents: outputs of 4x4 and 2x2 pixels, whose value is
    # the "columns" GEMM on CPU (conv.SMALL_OUTPUT).
    ("small_output_5x5s2", (2, 8, 8, 8), (5, 5, 8, 12), dict(window_strides=(2, 2),
                                                             padding=((2, 2), (2, 2)))),
    ("small_output_2x2_nchw", (2, 8, 4, 4), (8, 8, 5, 5),
     dict(window_strides=(2, 2), padding=((2, 2), (2, 2)),
          dimension_numbers=("NCHW", "OIHW", "NCHW"))),
]
BY_ID = {c[0]: c for c in CASES}
# The default suite runs these (compiling both sides' derivatives takes seconds
# of CPU per case); every case runs with -m slow.
FAST = {"groups4_odd_pad", "projection1x1s2", "small_output_5x5s2", "strided_negative_pad"}
# Cases whose kernel gradient takes the chunked form (the others: columns).
CHUNKED = ["resnet3x3", "resnet3x3s2", "depthwise3x3", "depthwise3x3s2_x2",
           "groups4_odd_pad", "dilated_same", "codec5x5s2", "codec9x9s4", "transpose_to_rgb",
           "negative_pad_mixed", "nchw_oihw", "small_output_5x5s2", "codec5x5s2_nchw",
           "stride4_9x9", "strided_negative_pad"]
SECOND_ORDER = ["rgb_stem", "resnet3x3s2", "depthwise3x3s2_x2", "projection1x1s2",
                "groups4_odd_pad", "dilated_same", "nchw_oihw", "small_output_2x2_nchw"]


def _params(ids: list[str], fast: set[str]) -> list:
  return [pytest.param(i, id=i, marks=() if i in fast else pytest.mark.slow) for i in ids]


def _case(case):
  _, x_shape, k_shape, kw = case
  kw = {"dimension_numbers": NHWC, **kw}
  rng = np.random.default_rng(0)  # NumPy draws: no eager XLA compilations per shape
  x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
  k = jnp.asarray(rng.standard_normal(k_shape, np.float32))
  ref = lambda x, k: lax.conv_general_dilated(x, k, **kw)  # noqa: E731
  ours = lambda x, k: conv_general_dilated(x, k, **kw)  # noqa: E731
  return x, k, ref, ours


def _close(a: jax.Array, b: jax.Array) -> None:
  """|a - b| <= 1e-5 * max|b| (float32 sums in another order)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.max(np.abs(b)))


def _first_order(fn, x, k):
  """Value, VJP (input and kernel) and JVP of fn at (x, k), in one jitted function."""
  def run(x, k):
    y, vjp = jax.vjp(fn, x, k)
    g = jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))
    return (y, *vjp(g), jax.jvp(fn, (x, k), (0.3 * x, 0.2 * k))[1])
  return jax.jit(run)(x, k)


@pytest.mark.parametrize("case_id", _params([c[0] for c in CASES], FAST))
def test_value_and_gradients_equal_lax(case_id, form):
  x, k, ref, ours = _case(BY_ID[case_id])
  for a, b in zip(_first_order(ours, x, k), _first_order(ref, x, k)):
    _close(a, b)


@pytest.mark.parametrize("case_id", _params(CHUNKED, set()))
def test_one_image_per_scan_step_equals_lax(case_id, monkeypatch, gemm):
  # CHUNK_BYTES = 1: the chunked form scans over single images (the test
  # batches otherwise fit in one chunk, without a scan).
  monkeypatch.setattr(conv_lib, "CHUNK_BYTES", 1)
  x, k, ref, ours = _case(BY_ID[case_id])
  for a, b in zip(_first_order(ours, x, k), _first_order(ref, x, k)):
    _close(a, b)


@pytest.mark.slow
def test_two_images_per_scan_step_equals_lax(monkeypatch, gemm):
  monkeypatch.setattr(conv_lib, "_chunk", lambda n, bytes_per_image: 2)
  x, k, ref, ours = _case(BY_ID["resnet3x3s2"])  # 4 images: 2 steps of 2
  for a, b in zip(_first_order(ours, x, k), _first_order(ref, x, k)):
    _close(a, b)


def test_chunk_is_the_largest_divisor_within_the_budget(monkeypatch):
  monkeypatch.setattr(conv_lib, "CHUNK_BYTES", 1000)
  assert [conv_lib._chunk(n, 100) for n in (128, 12, 7, 3)] == [8, 6, 7, 3]  # pylint: disable=protected-access
  assert conv_lib._chunk(128, 5000) == 1  # pylint: disable=protected-access


# The default suite's second-order cases: a grouped one (GEMM forms only) and an
# ungrouped one the C++ kernel takes; every pair runs with -m slow.
SECOND_ORDER_FAST = {("gemm", "depthwise3x3s2_x2"), ("cpp", "resnet3x3s2"),
                     ("cpp", "small_output_2x2_nchw")}


@pytest.mark.parametrize("form_id,case_id", [
    pytest.param(f, c, id=f"{f}-{c}", marks=() if (f, c) in SECOND_ORDER_FAST else pytest.mark.slow)
    for f in FORMS for c in SECOND_ORDER])
def test_second_derivatives_through_the_kernel_gradient_equal_lax(form_id, case_id, monkeypatch):
  # d/dx and d/dk of |dL/dk|^2 (reverse over reverse) and d/dk (dL/dk) . v
  # (forward over reverse); the GEMM forms with one image per scan step.
  _use_form(form_id, monkeypatch)
  monkeypatch.setattr(conv_lib, "CHUNK_BYTES", 1)
  x, k, ref, ours = _case(BY_ID[case_id])

  def second(fn):
    grad_k = jax.grad(lambda x, k: jnp.sum(jnp.sin(fn(x, k))), 1)
    rev = jax.grad(lambda x, k: jnp.sum(grad_k(x, k) ** 2), (0, 1))(x, k)
    return (*rev, jax.jvp(lambda k: grad_k(x, k), (k,), (0.5 * k,))[1])
  for a, b in zip(jax.jit(second, static_argnums=0)(ours), jax.jit(second, static_argnums=0)(ref)):
    _close(a, b)


def test_chunked_lists_the_cases_of_the_chunked_form():
  for case_id, _, k_shape, kw in CASES:
    if "dimension_numbers" not in kw:  # HWIO kernels
      columns = conv_lib._uses_columns(k_shape, kw.get("feature_group_count", 1))  # pylint: disable=protected-access
      assert columns != (case_id in CHUNKED), case_id


@pytest.mark.slow
def test_per_example_kernel_gradients_under_vmap(form):
  x, k, ref, ours = _case(BY_ID["resnet3x3s2"])
  per_example = lambda fn: jax.vmap(  # noqa: E731
      lambda xi: jax.grad(lambda k: jnp.sum(jnp.sin(fn(xi[None], k))))(k))(x)
  _close(jax.jit(lambda: per_example(ours))(), jax.jit(lambda: per_example(ref))())


def test_bfloat16_keeps_dtype_and_matches_lax():
  # bfloat16 takes a GEMM form (the C++ kernel is float32 only).
  x, k, ref, ours = _case(BY_ID["resnet3x3"])
  x, k = x.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
  loss = lambda fn: lambda k: jnp.sum(fn(x, k).astype(jnp.float32) ** 2)  # noqa: E731
  a, b = jax.jit(jax.grad(loss(ours)))(k), jax.jit(jax.grad(loss(ref)))(k)
  assert jax.eval_shape(ours, x, k).dtype == a.dtype == jnp.bfloat16
  # Both accumulate in float32 and round once to bfloat16 (8 bits): 2^-8 relative.
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  np.testing.assert_allclose(a, b, rtol=0, atol=2 ** -8 * np.max(np.abs(b)))


def test_models_common_uses_this_convolution():
  assert common.conv_general_dilated is conv_general_dilated


def _kernel_gradient_hlo(platform: str) -> str:
  x, k, _, ours = _case(BY_ID["resnet3x3"])
  grad = jax.jit(jax.grad(lambda k: jnp.sum(jnp.sin(ours(x, k)))))
  return grad.trace(k).lower(lowering_platforms=(platform,)).as_text()


def test_platform_switch_keeps_xla_kernel_gradient_off_cpu(monkeypatch, form):
  # On CPU the kernel gradient is the C++ kernel (an FFI custom call) or a GEMM
  # (dot_general) in a scan; lowered for a GPU it is XLA's convolution: one more
  # convolution, no custom call, no loop, no dot_general.
  monkeypatch.setattr(conv_lib, "CHUNK_BYTES", 1)
  cpu, gpu = _kernel_gradient_hlo("cpu"), _kernel_gradient_hlo("cuda")
  if form == "cpp":
    assert "stablehlo.custom_call @jaxcomp_JaxcompConvKernelGrad" in cpu
    assert "stablehlo.dot_general" not in cpu and "stablehlo.while" not in cpu
  else:
    assert "stablehlo.dot_general" in cpu and "stablehlo.while" in cpu
    assert "custom_call" not in cpu
  assert "stablehlo.dot_general" not in gpu and "stablehlo.while" not in gpu
  assert "custom_call" not in gpu
  assert gpu.count("stablehlo.convolution") == cpu.count("stablehlo.convolution") + 1


def test_cpu_kernel_gradient_compiles_without_convolutions(form):
  if jax.default_backend() != "cpu":
    pytest.skip("checks XLA:CPU's compiled kernel gradient")
  x, k, _, ours = _case(BY_ID["resnet3x3s2"])
  g = jnp.ones(jax.eval_shape(ours, x, k).shape)
  hlo = jax.jit(lambda x, g: jax.vjp(lambda k: ours(x, k), k)[1](g)[0]).lower(x, g).compile()
  assert "convolution(" not in hlo.as_text()
  assert ("custom-call" in hlo.as_text()) == (form == "cpp")


def test_small_outputs_are_gemms_on_cpu_and_convolutions_elsewhere():
  """Value, input and kernel gradients of a convolution with <= SMALL_OUTPUT output
  pixels compile to GEMMs on CPU, not to XLA:CPU's naive batch-minor convolution;
  lowered for a GPU they stay XLA's convolutions."""
  x, k, _, ours = _case(BY_ID["small_output_5x5s2"])
  step = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.sin(ours(x, k))), (0, 1)))
  if jax.default_backend() == "cpu":
    hlo = step.lower(x, k).compile().as_text()
    assert "convolution(" not in hlo and " dot(" in hlo
  gpu = step.trace(x, k).lower(lowering_platforms=("cuda",)).as_text()
  assert "stablehlo.convolution" in gpu and "stablehlo.dot_general" not in gpu
  # One more output pixel: XLA's convolution again.
  bigger = _case(("", (2, 10, 8, 8), (5, 5, 8, 12), dict(window_strides=(2, 2),
                                                          padding=((2, 2), (2, 2)))))
  assert "stablehlo.convolution" in jax.jit(bigger[3]).lower(*bigger[:2]).as_text()


def test_strided_input_gradients_are_stride1_convolutions_on_cpu():
  """The input gradient of a strided convolution is, on CPU, one stride-1 convolution
  per stride phase (no input dilation: XLA:CPU's slow path); lowered for a GPU it is
  XLA's one input-dilated convolution. Inputs with fewer than NARROW_CHANNELS channels
  keep XLA's form everywhere."""
  def lowered(case_id, platform):
    x, k, _, ours = _case(BY_ID[case_id])
    g = jnp.ones(jax.eval_shape(ours, x, k).shape)
    dx = jax.jit(lambda x, g: jax.vjp(lambda x: ours(x, k), x)[1](g)[0])
    hlo = dx.trace(x, g).lower(lowering_platforms=(platform,)).as_text()
    return hlo.count("stablehlo.convolution"), hlo.count("lhs_dilate = [1, 1]")
  assert lowered("codec5x5s2", "cpu") == (4, 4)       # phases of 3x3, 3x2, 2x3, 2x2 taps
  assert lowered("stride4_9x9", "cpu") == (16, 16)
  assert lowered("codec5x5s2", "cuda") == (1, 0)
  assert lowered("codec5x5s2_rgb", "cpu") == (1, 0)   # 3 input channels


def test_string_padding_with_input_dilation_raises():
  x, k, _, _ = _case(BY_ID["resnet3x3"])
  with pytest.raises(ValueError, match="lhs_dilation"):
    conv_general_dilated(x, k, (1, 1), "SAME", lhs_dilation=(2, 2), dimension_numbers=NHWC)
