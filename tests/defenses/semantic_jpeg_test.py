"""The MS-ROI / Aug-MSROI semantic JPEG defense (thesis 001, Ch. 3.5-3.6)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import attacks
from jaxcomp.defenses.jpeg import jpeg_defense
from jaxcomp.defenses.semantic_jpeg import semantic_jpeg_defense
from jaxcomp.msroi import network

LEVELS = (30, 40, 50, 60, 70)


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.key(0), (2, 40, 56, 3))


@pytest.mark.parametrize("level", [0, 2, 4])
def test_constant_map_is_plain_jpeg_at_that_level(images, level):
  # Sec. 2.4: level n holds saliency in (n/k, (n+1)/k]; (n + 1/2)/k is in level n.
  const = lambda x, k: jnp.full(x.shape[:3], (level + 0.5) / len(LEVELS))  # noqa: E731
  out = jax.jit(functools.partial(semantic_jpeg_defense, map_fn=const))(images, None)
  np.testing.assert_array_equal(out, jpeg_defense(images, quality=LEVELS[level]))


def test_blocks_take_the_quality_of_their_level(images):
  # Salient left 24 columns (three 8x8 block columns) -> Q70; the rest -> Q30.
  half = lambda x, k: jnp.zeros(x.shape[:3]).at[:, :, :24].set(1.0)  # noqa: E731
  out = semantic_jpeg_defense(images, None, map_fn=half)
  np.testing.assert_array_equal(out[:, :, :24], jpeg_defense(images, quality=70)[:, :, :24])
  np.testing.assert_array_equal(out[:, :, 24:], jpeg_defense(images, quality=30)[:, :, 24:])
  final = semantic_jpeg_defense(images, None, map_fn=half, final_quality=90)
  np.testing.assert_array_equal(final, jpeg_defense(out, quality=90))   # Algorithm 1, line 6


def test_msroi_defense_is_jittable_and_in_range(images):
  plain = jax.jit(functools.partial(semantic_jpeg_defense, aug=False))
  a = plain(images, None)
  assert a.shape == images.shape and a.dtype == jnp.float32
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(a, plain(images, jax.random.key(5)))   # the key is unused
  stack = np.stack([jpeg_defense(images, quality=q) for q in LEVELS])
  assert np.all(np.any(np.asarray(a)[None] == stack, axis=0))  # every pixel from one level


@pytest.mark.slow
def test_aug_msroi_defense_is_jittable_seeded_and_in_range(images):
  defend = jax.jit(functools.partial(semantic_jpeg_defense, num_perturbations=2))
  a = defend(images, jax.random.key(1))
  assert a.shape == images.shape and a.dtype == jnp.float32
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(a, defend(images, jax.random.key(1)))
  stack = np.stack([jpeg_defense(images, quality=q) for q in LEVELS])
  assert np.all(np.any(np.asarray(a)[None] == stack, axis=0))  # every pixel from one level


@pytest.mark.slow
def test_explicit_variables_and_bpda(images):
  _, variables, _ = network.pretrained()
  defense = functools.partial(semantic_jpeg_defense, aug=False, variables=variables)
  np.testing.assert_array_equal(defense(images, None),
                                semantic_jpeg_defense(images, None, aug=False))
  straight = attacks.bpda(defense)
  g = jax.jit(jax.grad(lambda x: straight(x, jax.random.key(0)).sum()))(images)
  np.testing.assert_array_equal(g, np.ones(images.shape))


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "PRNG key"),
    (dict(map_fn=lambda x, k: jnp.zeros(x.shape[:2])), "map_fn returned shape"),
    (dict(aug=False, levels=()), "at least one"),
    (dict(aug=False, levels=(30, 101)), "quality"),
])
def test_errors(images, kwargs, match):
  with pytest.raises(ValueError, match=match):
    semantic_jpeg_defense(images, None, **kwargs)


def test_registered_stages(images):
  from jaxcomp.defenses.stages import DEFENSE_STAGES
  msroi = DEFENSE_STAGES.get("msroi")
  assert not msroi.random and "short_side" in msroi.args
  one_level = jax.jit(msroi.make({}, levels=(50,)))
  np.testing.assert_array_equal(one_level(images, jax.random.key(0)),
                                jpeg_defense(images, quality=50))   # one level: plain JPEG
  aug = DEFENSE_STAGES.get("aug_msroi")
  assert aug.random and {"num_perturbations", "jitter", "short_side"} <= set(aug.args)
