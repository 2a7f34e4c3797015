"""Quantizers: the JPEG-DL soft quantizer against its definition, gradients, limits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from jaxcomp.ops.quantization import quantize_dequantize, soft_quantize


def reference_soft(z, q, alpha, num_candidates=5, bits=8):
  """JPEG_DL.md's soft quantizer written out literally (L candidates, softmax)."""
  L = num_candidates
  i0 = jax.lax.stop_gradient(
      jnp.clip(jnp.round(z / q) - L // 2, -2 ** (bits - 1) + 1, 2 ** (bits - 1) - L))
  r = (i0[..., None] + jnp.arange(L, dtype=z.dtype)) * jnp.asarray(q)[..., None]
  w = jax.nn.softmax(-jnp.asarray(alpha)[..., None] * (z[..., None] - r) ** 2, axis=-1)
  return jnp.sum(w * r, axis=-1)


CASES = [  # (z scale, q range, alpha range): soft, nearly hard, clamped index range, tiny alpha
    (100.0, (0.3, 3.0), (0.3, 3.0)),
    (3.0, (0.1, 1.0), (0.03, 0.3)),
    (1000.0, (0.1, 1.0), (1e-3, 1e-2)),
    (2000.0, (0.5, 5.0), (0.5, 5.0)),
    (50.0, (0.01, 0.1), (1e-5, 1e-4)),
]


@pytest.mark.parametrize("case,num_candidates",
                         [(c, 5) for c in range(len(CASES))] + [(0, 4), (3, 3), (0, 1)])
def test_matches_definition_values_and_gradients(case, num_candidates):
  scale, (q_lo, q_hi), (a_lo, a_hi) = CASES[case]
  rng = np.random.default_rng(case)
  with jax.enable_x64(True):
    z = jnp.asarray(rng.normal(size=(64, 8, 8)) * scale)
    q = jnp.asarray(rng.uniform(q_lo, q_hi, (8, 8)))
    alpha = jnp.asarray(rng.uniform(a_lo, a_hi, (8, 8)))
    ours = jax.jit(lambda z, q, a: soft_quantize(z, q, a, num_candidates=num_candidates))
    ref = lambda z, q, a: reference_soft(z, jnp.broadcast_to(q, z.shape),
                                         jnp.broadcast_to(a, z.shape), num_candidates)
    # Same function in float64: agreement to rounding error.
    np.testing.assert_allclose(ours(z, q, alpha), ref(z, q, alpha), rtol=1e-10, atol=1e-10)
    loss = lambda f: lambda z, q, a: jnp.sum(jnp.sin(f(z, q, a)))
    g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(z, q, alpha)
    g_ref = jax.grad(loss(ref), argnums=(0, 1, 2))(z, q, alpha)
    for a, b in zip(g_ours, g_ref):   # closed-form VJP vs autodiff of the definition
      np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * float(jnp.abs(b).max()))


def test_finite_differences():
  """Central differences in float64 at points away from the jumps of round(z / q)."""
  rng = np.random.default_rng(7)
  with jax.enable_x64(True):
    t = rng.integers(-150, 150, 40) + rng.uniform(-0.35, 0.35, 40)   # includes clamped ones
    q = jnp.asarray(rng.uniform(0.5, 2.0, 40))
    z = jnp.asarray(t) * q
    alpha = jnp.asarray(rng.uniform(0.2, 2.0, 40))
    f = jax.jit(lambda z, q, a: soft_quantize(z, q, a))
    grads = jax.jit(jax.vmap(jax.grad(lambda z, q, a: soft_quantize(z, q, a), (0, 1, 2))))(
        z, q, alpha)
    eps = 1e-6
    for i, (g, args) in enumerate(zip(grads, [(z, q, alpha)] * 3)):
      plus = list(args); minus = list(args)
      plus[i] = args[i] + eps; minus[i] = args[i] - eps
      fd = (f(*plus) - f(*minus)) / (2 * eps)
      # Truncation error O(eps**2 * f''') and rounding O(1e-16 * |f| / eps) ~ 1e-8.
      np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


def test_soft_tends_to_hard_rounding_as_alpha_grows():
  q = 2.0
  steps = np.random.default_rng(0).integers(-60, 60, 1000)
  offsets = np.random.default_rng(1).uniform(-0.499, 0.499, 1000)   # off ties by >= 1e-3
  z = jnp.asarray((steps + offsets) * q, jnp.float32)
  hard = jnp.asarray(steps * q, jnp.float32)
  soft = jax.jit(soft_quantize)
  errors = [float(jnp.mean(jnp.abs(soft(z, q, alpha) - hard))) for alpha in (1.0, 10.0, 1e2, 1e4)]
  assert errors == sorted(errors, reverse=True) and errors[0] > 10 * errors[-1]
  # alpha q**2 = 4e4: a point e steps from a tie is off hard rounding by about
  # q exp(-4 * 4e4 * e) <= 2 exp(-160) at e >= 1e-3.
  np.testing.assert_allclose(soft(z, q, 1e4), hard, atol=1e-3)
  # alpha -> 0: the mean of the 5 candidates, i0 + 2 = round(z / q) when unclamped.
  np.testing.assert_allclose(soft(z, q, 1e-9), hard, atol=1e-3)


def test_index_range_is_clamped():
  # b = 8: indices in [-127, 127]; far outside, the output saturates at +-127 q.
  z = jnp.asarray([-1e4, -300.0, 300.0, 1e4])
  np.testing.assert_allclose(jax.jit(soft_quantize)(z, 1.0, 50.0), [-127, -127, 127, 127],
                             atol=1e-4)
  np.testing.assert_allclose(soft_quantize(z, 1.0, 50.0, bits=11), [-1023, -300, 300, 1023],
                             atol=1e-4)


def test_straight_through_and_hard_quantizers():
  z = jnp.linspace(-20.0, 20.0, 101)
  q = 3.0
  for name in ("hard", "ste"):
    np.testing.assert_array_equal(jax.jit(lambda v: quantize_dequantize(v, q, quantizer=name))(z),
                                  jnp.round(z / q) * q)
  g_ste = jax.jit(jax.grad(lambda v: quantize_dequantize(v, q, quantizer="ste").sum()))(z)
  np.testing.assert_array_equal(g_ste, jnp.ones_like(z))       # straight-through: identity
  g_hard = jax.jit(jax.grad(lambda v: quantize_dequantize(v, q, quantizer="hard").sum()))(z)
  np.testing.assert_array_equal(g_hard, jnp.zeros_like(z))


def test_noise_quantizer():
  z = jnp.zeros((10000,))
  noisy = jax.jit(lambda v, k: quantize_dequantize(v, 4.0, quantizer="noise", key=k))(z, jax.random.key(0))
  assert float(jnp.abs(noisy).max()) <= 2.0                      # U(-q/2, q/2)
  assert abs(float(jnp.var(noisy)) - 16.0 / 12.0) < 0.1          # q**2 / 12
  with pytest.raises(ValueError, match="PRNG key"):
    quantize_dequantize(z, 1.0, quantizer="noise")


def test_vmap_and_broadcast_tables():
  z = jax.random.normal(jax.random.key(1), (3, 4, 8, 8)) * 10
  q = jnp.linspace(1.0, 5.0, 64).reshape(8, 8)
  batched = jax.jit(jax.vmap(lambda v: soft_quantize(v, q, 5.0)))(z)
  np.testing.assert_allclose(batched, soft_quantize(z, q, 5.0), rtol=1e-6)
  g = jax.jit(jax.grad(lambda t: soft_quantize(z, t, 0.5).sum()))(q)
  assert g.shape == (8, 8) and bool(jnp.all(jnp.isfinite(g)))


def test_errors():
  with pytest.raises(ValueError, match="unknown quantizer"):
    quantize_dequantize(jnp.zeros(3), 1.0, quantizer="round")
  with pytest.raises(ValueError, match="num_candidates"):
    soft_quantize(jnp.zeros(3), 1.0, 1.0, num_candidates=0)
  with pytest.raises(ValueError, match="num_candidates"):
    soft_quantize(jnp.zeros(3), 1.0, 1.0, num_candidates=5, bits=2)
