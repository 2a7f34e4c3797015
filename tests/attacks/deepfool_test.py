"""DeepFool: on an affine classifier the first step is the exact minimal L2 perturbation."""

from __future__ import annotations

import jax
import numpy as np

from jaxcomp import attacks


def test_deepfool_linear_is_minimal_l2(linear_model):
  apply_fn, params, x, y = linear_model
  overshoot = 0.02
  adv, info = jax.jit(lambda x, y: attacks.deepfool(apply_fn, params, x, y, jax.random.key(0),
                                                    overshoot=overshoot))(x, y)
  # Closed form (Moosavi-Dezfooli et al. 2016, Eq. 8): for f_k = (w_k - w_y)^T x + (b_k - b_y),
  # the minimal L2 perturbation is r* = |f_l| / ||w_l' ||^2 w_l', l = argmin_k |f_k| / ||w_k'||.
  w = np.asarray(params["w"], np.float64)
  z = np.asarray(x.reshape(6, -1), np.float64) @ w + np.asarray(params["b"], np.float64)
  r_star = []
  for i, yi in enumerate(np.asarray(y)):
    ks = [k for k in range(5) if k != yi]
    wk = np.stack([w[:, k] - w[:, yi] for k in ks])
    fk = np.array([z[i, k] - z[i, yi] for k in ks])
    dist = np.abs(fk) / np.linalg.norm(wk, axis=1)
    l = np.argmin(dist)
    r_star.append(np.abs(fk[l]) / np.sum(wk[l] ** 2) * wk[l])
  r_star = np.stack(r_star).reshape(x.shape)
  assert np.all(np.asarray(info["success"]))
  # DeepFool returns (1 + overshoot) (|f_l| + 1e-4) / ||w_l||^2 w_l; the 1e-4 adds
  # 1e-4 / ||w_l|| (< 1e-4 here) to the norm; float32 adds ~1e-6.
  np.testing.assert_allclose(np.asarray(adv) - np.asarray(x), (1 + overshoot) * r_star, atol=2e-4)
  np.testing.assert_allclose(info["l2"], (1 + overshoot) * np.linalg.norm(
      r_star.reshape(6, -1), axis=1), rtol=1e-3)
  # Without the overshoot the point lies on the boundary: a smaller step fails.
  inside = np.asarray(x) + 0.99 * r_star
  assert np.all(np.argmax(apply_fn(params, inside), -1) == np.asarray(y))
