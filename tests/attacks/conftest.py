"""Small models for the attack and defense tests: an affine classifier with a
closed-form answer and a tiny MLP trained in seconds on real Fashion-MNIST."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp.data.readers import idx_files, read_idx


@dataclasses.dataclass(frozen=True)
class Trained:
  apply_fn: Any
  params: Any
  images: jax.Array  # [N, 28, 28, 1] float32 in [0, 1], held out, all classified correctly
  labels: jax.Array  # [N] int32


def linear_apply(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """Affine classifier `flatten(x) @ w + b`."""
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


@pytest.fixture(scope="session")
def linear_model():
  """(apply_fn, params, images [6, 4, 4, 3] in [0.3, 0.7], labels = its predictions)."""
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(48, 5)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=5), jnp.float32)}
  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(6, 4, 4, 3)), jnp.float32)
  return linear_apply, params, x, jnp.argmax(linear_apply(params, x), -1).astype(jnp.int32)


def mlp_apply(params: dict[str, Any], x: jax.Array) -> jax.Array:
  h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


@pytest.fixture(scope="session")
def fashion_mlp(shared_data) -> Trained:
  return train_fashion_mlp(shared_data)


def train_fashion_mlp(shared_data) -> Trained:
  """784-128-10 MLP, Adam 1e-3, 300 steps of batch 128 on the first 2,000
  images of the Fashion-MNIST test file (6x smaller to read than the training
  file; ~80 % accuracy, seconds on 2 cores). Evaluation set: the first 64 of
  its last 256 images (disjoint from training) that it classifies correctly."""
  images, labels = (read_idx(p) for p in idx_files(shared_data / "fashion_mnist", "test"))
  images = jnp.asarray(images[..., None] / 255.0, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  xtr, ytr, xte, yte = images[:2000], labels[:2000], images[-256:], labels[-256:]
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {"w1": jax.random.normal(k1, (784, 128)) * np.sqrt(2 / 784), "b1": jnp.zeros(128),
            "w2": jax.random.normal(k2, (128, 10)) * np.sqrt(1 / 128), "b2": jnp.zeros(10)}
  opt = optax.adam(1e-3)

  @jax.jit
  def train(params, key):
    def step(carry, k):
      p, s = carry
      idx = jax.random.randint(k, (128,), 0, xtr.shape[0])
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          mlp_apply(p, xtr[idx]), ytr[idx]).mean())(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 300))[0][0]

  params = train(params, k3)
  ok = np.asarray(jnp.argmax(mlp_apply(params, xte), -1) == yte)
  assert ok.mean() > 0.7, f"the test model trained badly: accuracy {ok.mean()}"
  keep = np.flatnonzero(ok)[:64]
  return Trained(mlp_apply, params, xte[keep], yte[keep])
