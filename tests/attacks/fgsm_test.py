"""FGSM / GA / BIM: closed forms on an affine classifier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import attacks


def _ce_grad(params, x, y):
  """Analytic gradient of CE(softmax(W^T x + b), y) w.r.t. x: W (softmax - onehot)."""
  z = np.asarray(x.reshape(x.shape[0], -1) @ params["w"] + params["b"], np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  p[np.arange(len(y)), np.asarray(y)] -= 1.0
  return (p @ np.asarray(params["w"], np.float64).T).reshape(x.shape)


# float32 forward/backward vs float64 closed form: the sign never flips for
# these gradients (|g| >> 1e-6), so the images agree to float32 rounding.
ATOL = 1e-6


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_linf_matches_closed_form(linear_model, targeted):
  apply_fn, params, x, y = linear_model
  t = (y + 1) % 5 if targeted else None
  eps = 0.05
  adv, info = jax.jit(lambda x, y, t: attacks.fgsm(apply_fn, params, x, y, jax.random.key(0),
                                                   eps=eps, target_labels=t))(x, y, t)
  g = _ce_grad(params, x, t if targeted else y)
  expected = np.clip(np.asarray(x) + (-eps if targeted else eps) * np.sign(g), 0, 1)
  np.testing.assert_allclose(adv, expected, atol=ATOL)
  np.testing.assert_allclose(info["linf"], eps, atol=ATOL)  # no clipping: x in [0.3, 0.7]


def test_gradient_attack_l2_matches_closed_form(linear_model):
  # GA (Sec. 3.3.3): x' = x + eps g / ||g||_2.
  apply_fn, params, x, y = linear_model
  adv, info = attacks.fgsm(apply_fn, params, x, y, jax.random.key(0), eps=0.3, norm="l2")
  g = _ce_grad(params, x, y)
  g /= np.sqrt((g ** 2).sum(axis=(1, 2, 3), keepdims=True))
  np.testing.assert_allclose(adv, np.asarray(x) + 0.3 * g, atol=ATOL)
  np.testing.assert_allclose(info["l2"], 0.3, atol=1e-5)


def test_bim_first_step_is_fgsm_of_step_size(linear_model):
  # One BIM step of size alpha <= eps is FGSM with eps = alpha (Eq. 4.2).
  apply_fn, params, x, y = linear_model
  key = jax.random.key(0)
  a1, _ = attacks.bim(apply_fn, params, x, y, key, eps=0.1, step_size=0.02, num_steps=1)
  a2, _ = attacks.fgsm(apply_fn, params, x, y, key, eps=0.02)
  np.testing.assert_allclose(a1, a2, atol=ATOL)
