"""BPDA and EOT: gradient semantics, and an adaptive attack beating the naive one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import attacks
from jaxcomp.attacks import core
from jaxcomp.defenses import majority_vote, pixel_deflection


def test_bpda_forward_is_defense_backward_is_surrogate():
  x = jnp.linspace(0.0, 1.0, 12).reshape(1, 2, 2, 3)
  key = jax.random.key(0)
  quantise = lambda v, k: jnp.round(v * 4) / 4  # gradient 0 almost everywhere
  straight = attacks.bpda(quantise)
  np.testing.assert_array_equal(straight(x, key), quantise(x, key))
  np.testing.assert_array_equal(jax.grad(lambda v: straight(v, key).sum())(x), np.ones(x.shape))
  square = attacks.bpda(quantise, surrogate=lambda v, k: v ** 2)
  np.testing.assert_allclose(jax.jit(jax.grad(lambda v: square(v, key).sum()))(x), 2 * x,
                             rtol=1e-6)


def test_eot_loss_gradient_is_mean_of_draw_gradients(linear_model):
  apply_fn, params, x, y = linear_model
  noisy = attacks.defended(apply_fn, lambda v, k: v + 0.1 * jax.random.normal(k, v.shape))
  model = attacks.eot(noisy, 4)
  key = jax.random.key(3)
  logits = model(params, x, key)
  assert logits.shape == (4, 6, 5)
  g_eot = jax.jit(jax.grad(lambda v: core.cross_entropy(model(params, v, key), y).sum()))(x)
  # The same four draws one at a time (eot splits its key into S keys).
  grad_one = jax.jit(jax.grad(lambda v, k: core.cross_entropy(noisy(params, v, k), y).sum()))
  draws = [grad_one(x, k) for k in jax.random.split(key, 4)]
  np.testing.assert_allclose(g_eot, np.mean(draws, axis=0), rtol=1e-5, atol=1e-7)


def _naive_vs_adaptive(m, defense, **kw):
  """Ens-10 accuracies (clean, naive attack through the defense, BPDA + EOT-4)."""
  vote = jax.jit(lambda adv: majority_vote(m.apply_fn, m.params, adv, jax.random.key(9),
                                           defense=defense, num_draws=10))
  acc = lambda adv: np.mean(np.asarray(vote(adv)) == np.asarray(m.labels))
  key = jax.random.key(0)
  naive, _ = attacks.pgd(attacks.defended(m.apply_fn, defense), m.params, m.images, m.labels,
                         key, **kw)
  adaptive_model = attacks.eot(attacks.defended(m.apply_fn, attacks.bpda(defense)), 4)
  adaptive, info = attacks.pgd(adaptive_model, m.params, m.images, m.labels, key, **kw)
  assert float(info["linf"].max()) <= kw["eps"] + 1e-6
  return acc(m.images), acc(naive), acc(adaptive)


def test_bpda_eot_beats_naive_attack_on_randomised_defense(fashion_mlp):
  """A randomised, non-differentiable defense: uniform noise, then 2-bit
  quantisation. Attacked through the defense directly ("naive"), the rounding
  zeroes the gradient and the attack is masked; BPDA (identity backward) with
  EOT over 4 draws breaks the defense. Accuracy is the Ens-10 majority vote."""

  def defense(x, k):
    return jnp.round((x + jax.random.uniform(k, x.shape, x.dtype, -0.1, 0.1)) * 4) / 4

  clean, naive, adaptive = _naive_vs_adaptive(fashion_mlp, defense, eps=0.1, num_steps=3)
  assert clean > 0.8
  assert adaptive < naive - 0.3


@pytest.mark.slow  # ~45 s on 2 busy cores, mostly compiling the vmapped deflections
def test_bpda_eot_beats_naive_attack_on_pixel_deflection(fashion_mlp):
  """The same with the thesis's defense: pixel deflection, then 2-bit quantisation."""

  def defense(x, k):
    return jnp.round(pixel_deflection(x, k, deflections=200, window=2) * 4) / 4

  clean, naive, adaptive = _naive_vs_adaptive(fashion_mlp, defense, eps=0.1, num_steps=3)
  assert clean > 0.9
  assert adaptive < naive - 0.3
