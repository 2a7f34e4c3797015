"""One RePr round (Algorithm 3) through the public API on a tiny C^2(8): rank, select,
mask, train the sub-network, re-initialise, reset BN and moments, unmask, train.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp import models
from jaxcomp.repr import layers, masks, ranking, reinit, selection


def test_one_repr_round():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((8, 8, 8, 3)).astype(np.float32)
  y = rng.integers(0, 10, 8)
  model = models.get_model("convnet", num_classes=10, depth=2, width=8)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.adam(1e-2), masks.mask_updates())
  opt_state = tx.init(params)
  apply = masks.masked_apply(model.apply)

  @jax.jit
  def step(params, stats, opt_state):
    m = opt_state[-1].masks     # the masks the optimizer holds drive the forward pass too
    def loss(p):
      (logits, _), upd = apply({"params": p, "batch_stats": stats}, m, x, train=True,
                               mutable=["batch_stats"])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y]), upd
    (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), upd["batch_stats"], opt_state

  for _ in range(2):
    params, stats, opt_state = step(params, stats, opt_state)
  # Drop: rank globally, 30 %, the first conv excluded.
  scores = ranking.drop_scores("ortho", params)
  first = layers.first_conv(params, image_channels=3)
  dropped, counts = selection.select_filters(scores, 0.3, exclude=(first,))
  assert int(counts["conv2"]) == int(0.3 * 8) and int(counts["conv1"]) == 0
  m = masks.filter_masks(params, dropped)
  opt_state = masks.set_masks(opt_state, m)
  before = params
  for _ in range(2):
    params, stats, opt_state = step(params, stats, opt_state)
  d = np.asarray(dropped["conv2"])
  np.testing.assert_array_equal(np.asarray(params["conv2"]["kernel"])[..., d],
                                np.asarray(before["conv2"]["kernel"])[..., d])
  # Re-introduce.
  params = reinit.reinit_filters(params, dropped, jax.random.PRNGKey(1))
  variables = reinit.reset_bn({"params": params, "batch_stats": stats}, dropped)
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = masks.reset_optimizer_moments(opt_state, m)
  opt_state = masks.set_masks(opt_state, masks.filter_masks(params, {}))
  w = np.asarray(params["conv2"]["kernel"]).reshape(-1, 8).T
  w = w / np.linalg.norm(w, axis=1, keepdims=True)
  assert np.max(np.abs(w[d] @ w[~d].T)) < 1e-5
  np.testing.assert_array_equal(np.asarray(params["conv2_bn"]["scale"])[d], 1.0)
  new, _, _ = step(params, stats, opt_state)
  moved = np.asarray(new["conv2"]["kernel"]) != np.asarray(params["conv2"]["kernel"])
  assert np.all(moved[..., d])
  r = layers.filter_responses(model, {"params": new, "batch_stats": stats}, x)
  assert np.all(np.abs(np.asarray(r["conv2"])).max(axis=(0, 1, 2)) > 0)
