"""The JPEG-DL layer's C++ CPU kernel against its XLA formulation and float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.layers.jpeg_layer import JpegLayer
from jaxcomp.ops import jpeg_dl_layer


@pytest.fixture(autouse=True)
def kernel(monkeypatch):
  if not jpeg_dl_layer.available():
    pytest.skip("the C++ kernel could not be built here (ops.cpu_kernels warned why)")
  # conftest's 8 CPU devices would keep the XLA formulation (KERNEL_ON_MULTI_DEVICE_CPU).
  monkeypatch.setattr(jpeg_dl_layer, "KERNEL_ON_MULTI_DEVICE_CPU", True)


def layer_tables(layer: JpegLayer, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The (steps, alpha, window) the layer hands to `jpeg_dl_layer.apply`."""
  seen = []
  apply = jpeg_dl_layer.apply
  try:
    jpeg_dl_layer.apply = lambda x, *a: seen.append(a[:3]) or apply(x, *a)
    layer.apply(layer.init(jax.random.key(1), x), x)
  finally:
    jpeg_dl_layer.apply = apply
  return seen[0]


# (shape, layer keywords): every branch of the kernel (RGB / grey, padding in both
# directions, several rounds, per-entry alpha and windows, soft and hard quantizers).
CASES = [
    ((2, 16, 24, 3), dict()),
    ((2, 13, 21, 3), dict(rounds=2, alpha_mode="trainable", alpha=0.05)),
    ((3, 10, 9, 1), dict(num_channels=1, bits="auto", alpha=0.3)),
    ((2, 32, 32, 3), dict(alpha_mode="hardness_matching", quality=90)),
    ((5, 40, 48, 3), dict(quality=20, num_candidates=3, alpha=0.5)),     # helper tasks
]


def _value_and_grads(fn, x, tables, num_candidates):
  """Output, loss, and the loss's gradients for x, the steps and alpha."""
  steps, alpha, window = tables
  loss = lambda x, s, a: jnp.sum(jnp.sin(3.0 * fn(x, s, a, window, num_candidates)))
  value, grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(x, steps, alpha)
  return (jax.jit(fn, static_argnums=4)(x, steps, alpha, window, num_candidates), value, *grads)


@pytest.mark.parametrize("shape,kwargs", CASES)
def test_kernel_is_as_close_to_float64_as_xla_float32(shape, kwargs):
  """Output and the gradients for images, steps and alpha against the formulation in
  float64: the kernel's error is at most 3x XLA's own float32 error (+ 1e-6 of the
  largest value; measured 0.3-2.7x, the most for alpha's gradient on the grey case).
  The soft quantizer's derivatives are differences of nearly equal moments
  (2 alpha q**2 Var(j), ...), so both float32 gradients are ~1e-4 of their largest
  value from float64."""
  layer = JpegLayer(**kwargs)
  x = jax.random.uniform(jax.random.key(0), shape)
  tables = layer_tables(layer, x)
  L = layer.num_candidates
  ours = _value_and_grads(jpeg_dl_layer._cpu, x, tables, L)
  xla = _value_and_grads(jpeg_dl_layer.reference, x, tables, L)
  with jax.enable_x64(True):
    exact = _value_and_grads(jpeg_dl_layer.reference, jnp.asarray(x, jnp.float64),
                             [jnp.asarray(t, jnp.float64) for t in tables], L)
  for name, a, b, e in zip(("y", "loss", "grad x", "grad q", "grad alpha"), ours, xla, exact):
    e = np.asarray(e, np.float64)
    err_ours = np.max(np.abs(np.asarray(a, np.float64) - e))
    err_xla = np.max(np.abs(np.asarray(b, np.float64) - e))
    assert err_ours <= 3 * err_xla + 1e-6 * np.max(np.abs(e)), (name, err_ours, err_xla)
    assert np.max(np.abs(e)) > 0, name
  np.testing.assert_allclose(ours[0], exact[0], atol=2e-5)


def test_finite_differences_of_the_kernel():
  """Directional derivatives of the C++ forward pass (central differences in float32)
  equal the C++ backward pass's gradients, for images, steps and alpha. Per entry
  alpha = 3 / q**2 keeps every quantizer equally soft: the candidates a window shift
  drops weigh < e**-18, so the map is smooth at the differences' scale."""
  layer = JpegLayer(rounds=2, quality=80)
  x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 3))
  steps, _, window = layer_tables(layer, x)
  alpha = 3.0 / steps ** 2
  w = jax.random.normal(jax.random.key(3), x.shape)
  loss = lambda x, s, a: jnp.sum(jpeg_dl_layer._cpu(x, s, a, window, 5) * w)
  gx, gs, ga = jax.jit(jax.grad(loss, (0, 1, 2)))(x, steps, alpha)
  f = jax.jit(loss)
  dx = jax.random.normal(jax.random.key(4), x.shape)
  ds = jax.random.normal(jax.random.key(5), steps.shape)
  da = jax.random.normal(jax.random.key(6), alpha.shape) * alpha   # relative to alpha's size
  zero = lambda t: 0.0 * t
  # (eps, directions, gradient . direction, rtol): float32 forward passes put ~1e-6 of
  # noise on every pixel, so the differences in q and alpha (whose derivatives are
  # ~100x smaller here than the images') are good to ~1 %.
  for eps, (px, ps, pa), expected, rtol in [
      (1e-4, (dx, zero(ds), zero(da)), jnp.vdot(gx, dx), 3e-3),
      (3e-3, (zero(dx), ds, zero(da)), jnp.vdot(gs, ds), 2e-2),
      (3e-3, (zero(dx), zero(ds), da), jnp.vdot(ga, da), 2e-2)]:
    fd = (f(x + eps * px, steps + eps * ps, alpha + eps * pa)
          - f(x - eps * px, steps - eps * ps, alpha - eps * pa)) / (2 * eps)
    np.testing.assert_allclose(fd, expected, rtol=rtol)
    assert abs(float(expected)) > 0.1


def test_only_the_differentiated_inputs_are_computed():
  """Training the tables alone skips the image gradient; a fixed alpha saves two
  derivatives per coefficient instead of three; the gradients are the same."""
  layer = JpegLayer(rounds=2, alpha=0.3)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 24, 3))
  steps, alpha, window = layer_tables(layer, x)
  loss = lambda x, s, a: jnp.sum(jpeg_dl_layer._cpu(x, s, a, window, 5) ** 2)
  full = jax.jit(jax.grad(loss, (0, 1, 2)))(x, steps, alpha)
  steps_only = jax.jit(jax.grad(loss, 1))(x, steps, alpha)
  text = jax.jit(jax.grad(loss, 1)).lower(x, steps, alpha).as_text()
  assert "tensor<2x2x3x3x2x2x64xf32>" in text          # [B, H/8, C, W/8, R, 2 fields, 64]
  backward = text.split("JpegDlBackward")[1].split("\n")[0]
  assert "-> (tensor<0xf32>, tensor<2x2x1x2x3x8x8xf32>)" in backward   # no image gradient
  np.testing.assert_allclose(steps_only, full[1], rtol=1e-6)


def test_the_layer_runs_the_kernel_on_cpu_and_xla_otherwise(monkeypatch):
  layer = JpegLayer()
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  v = layer.init(jax.random.key(1), x)
  lowered = lambda x: jax.jit(jax.value_and_grad(lambda x: jnp.sum(layer.apply(v, x)))).lower(
      x).as_text()
  assert "JpegDlForward" in lowered(x) and "JpegDlBackward" in lowered(x)
  with jax.enable_x64(True):                     # float64: the XLA formulation
    assert "JpegDl" not in lowered(jnp.asarray(x, jnp.float64))
  monkeypatch.setattr(jpeg_dl_layer, "KERNEL_ON_MULTI_DEVICE_CPU", False)
  assert "JpegDl" not in lowered(x)              # conftest's 8 devices
  monkeypatch.setattr(jpeg_dl_layer, "KERNEL_ON_MULTI_DEVICE_CPU", True)
  monkeypatch.setattr(jpeg_dl_layer, "available", lambda: False)
  assert "JpegDl" not in lowered(x)              # no kernel built
  # Lowered for another platform, the XLA formulation is chosen.
  monkeypatch.undo()
  monkeypatch.setattr(jpeg_dl_layer, "KERNEL_ON_MULTI_DEVICE_CPU", True)
  exported = jax.export.export(jax.jit(lambda x: layer.apply(v, x)), platforms=["cuda"])(x)
  assert "JpegDl" not in exported.mlir_module()


def test_vmap_and_repeated_calls_agree():
  layer = JpegLayer(alpha=0.2)
  x = jax.random.uniform(jax.random.key(0), (3, 2, 16, 24, 3))
  steps, alpha, window = layer_tables(layer, x[0])
  flat_x = x.reshape(6, 16, 24, 3)
  step = jax.jit(jax.value_and_grad(
      lambda x, s, a: jnp.sum(jpeg_dl_layer._cpu(x, s, a, window, 5) ** 2), (0, 1, 2)))
  jax.tree.map(np.testing.assert_array_equal, step(flat_x, steps, alpha),
               step(flat_x, steps, alpha))                  # no schedule dependence
  mapped = jax.jit(jax.vmap(lambda xb: jpeg_dl_layer._cpu(xb, steps, alpha, window, 5)))(x)
  np.testing.assert_array_equal(mapped.reshape(flat_x.shape),
                                jpeg_dl_layer._cpu(flat_x, steps, alpha, window, 5))


def test_bad_tables_are_a_clear_error():
  x = jnp.zeros((1, 8, 8, 3))
  t = jnp.ones((1, 3, 8, 8))
  with pytest.raises(ValueError, match=r"steps must be \[1, 3, 8, 8\] for 3 channel"):
    jpeg_dl_layer.apply(x, jnp.ones((1, 1, 8, 8)), t, jnp.ones((2, 1, 3, 8, 8)), 5)
  with pytest.raises(ValueError, match=r"window must be \[2, 1, 3, 8, 8\]"):
    jpeg_dl_layer.apply(x, t, t, t, 5)


def test_more_candidates_than_the_kernel_unrolls_run_the_xla_formulation():
  layer = JpegLayer(num_candidates=9, alpha=0.1)
  x = jax.random.uniform(jax.random.key(0), (1, 8, 8, 3))
  v = layer.init(jax.random.key(1), x)
  assert "JpegDl" not in jax.jit(lambda x: layer.apply(v, x)).lower(x).as_text()
