"""Tests of jaxcomp.codecs.learned: presets, shapes, quantization modes, gradients, input checks.

XLA compilation dominates on CPU, so each architecture compiles two programs:
its init and one function computing everything the checks need.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.codecs import learned

# rbg keys: XLA compiles threefry (the default) ~7x slower on CPU for model inits.
X = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))


@pytest.fixture(scope="module", params=learned.ARCHITECTURES)
def computed(request):
  """(model, variables, outputs of the noise and dequantize passes, aux loss, gradients)."""
  model = learned.build(request.param, num_filters=8, num_latent=12)
  variables = jax.jit(lambda k: model.init(k, X[:1], mode="dequantize"))(jax.random.key(1, impl="rbg"))

  def everything(variables, x, key):
    def loss(params):
      out = model.apply({"params": params}, x, mode="noise", key=key)
      bits = sum(jnp.sum(-jnp.log2(p)) for p in jax.tree.leaves(out["likelihoods"]))
      return bits / x[..., 0].size + 0.01 * 255 ** 2 * jnp.mean((out["x_hat"] - x) ** 2), out
    (_, noisy), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    deq = model.apply(variables, x, mode="dequantize")
    aux = model.apply(variables, method=model.aux_loss)
    return noisy, deq, aux, grads

  return (model, variables, *jax.jit(everything)(variables, X, jax.random.key(2, impl="rbg")))


def test_presets_and_lambdas():
  # SPEC Sec. 3.
  assert learned.preset("hyperprior", 1) == (128, 192) == learned.preset("factorized", 5)
  assert learned.preset("hyperprior", 6) == (192, 320)
  assert learned.preset("bls2017", 3) == (128, 128) and learned.preset("bls2017", 8) == (192, 192)
  assert [learned.lmbda(q) for q in (1, 8)] == [0.0018, 0.18]
  with pytest.raises(ValueError, match="1..8"):
    learned.preset("hyperprior", 9)
  with pytest.raises(ValueError, match="architecture"):
    learned.build("vq", num_filters=8, num_latent=8)
  codec = {"architecture": "factorized", "quality": 2, "num_filters": 0, "num_latent": 24,
           "gdn": "simplified"}
  m = learned.from_config(codec)
  assert (m.num_filters, m.num_latent, m.gdn) == (128, 24, "simplified")


def test_forward_shapes_and_modes(computed):
  model, variables, noisy, deq, aux, _ = computed
  hyper = isinstance(model, learned.ScaleHyperprior)
  assert noisy["x_hat"].shape == X.shape
  assert set(noisy["likelihoods"]) == ({"y", "z"} if hyper else {"y"})
  assert noisy["y"].shape == (2, 4, 4, 12)
  for p in jax.tree.leaves(noisy["likelihoods"]):
    assert np.all((p >= 1e-9) & (p <= 1.0))                 # bounded likelihoods
  assert np.all(np.abs(noisy["y_hat"] - noisy["y"]) <= 0.5)   # additive U(-1/2, 1/2) noise
  assert not np.allclose(noisy["y_hat"], deq["y_hat"])
  offset = 0.0 if hyper else variables["params"]["entropy_bottleneck"]["quantiles"][:, 0, 1]
  np.testing.assert_allclose(deq["y_hat"], jnp.round(deq["y"] - offset) + offset, atol=1e-5)
  if hyper:
    assert deq["scales"].shape == deq["y"].shape and np.all(deq["scales"] >= 0)
  assert np.isfinite(aux) and aux > 0


def test_rate_distortion_gradients(computed):
  model, _, _, _, _, grads = computed
  norms = {k: float(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(v))) for k, v in grads.items()}
  assert all(np.isfinite(n) for n in norms.values())
  assert norms["g_a"] > 0 and norms["g_s"] > 0 and norms["entropy_bottleneck"] > 0
  if isinstance(model, learned.ScaleHyperprior):
    assert norms["h_a"] > 0 and norms["h_s"] > 0
  # The quantiles learn from the auxiliary loss only (medians are held constant).
  assert float(jnp.abs(grads["entropy_bottleneck"]["quantiles"]).max()) == 0


def test_input_checks(computed):
  model, variables = computed[:2]
  with pytest.raises(ValueError, match="multiples"):
    model.apply(variables, X[:, :40], mode="dequantize")
  with pytest.raises(ValueError, match="3 channels"):
    model.apply(variables, X[..., :1], mode="dequantize")
