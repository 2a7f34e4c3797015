"""cResNet (report 004, Table 2): parameter counts, shapes per rate point, aligned crops, errors.

Expected counts: the trunk is ResNet-50's conv3_x-conv5_x, so its parameters
equal those of the zoo's `resnet50` stages 2-4 (whose total is checked against
torchvision's 25,557,032 in models_test.py); the per-input bottlenecks and the
head are closed forms written out below.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import models
from jaxcomp.codecs import latents, pretrained
from jaxcomp.models import cresnet

KEY = jax.random.key(0, impl="rbg")


def _shapes(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)

  def init_and_apply(x):
    variables = model.init(KEY, x)
    return variables, model.apply(variables, x)

  return jax.eval_shape(init_and_apply, x)


@functools.lru_cache(maxsize=None)
def _traced(name: str, channels: int = 2 * 96):
  """Shapes of a registered cResNet on a batch of 2 8x8 latent maps, traced once per module."""
  return _shapes(models.MODELS.get(name)(10), (2, 8, 8, channels))


def _branch_count(c_in: int, width: int, out: int = 128) -> int:
  """1x1 c_in->w, 3x3 w->w, 1x1 w->out, projection c_in->out; BN(k) has 2k parameters."""
  return c_in * width + 9 * width * width + width * out + c_in * out + 2 * (2 * width + 2 * out)


@pytest.fixture(scope="module")
def resnet50_trunk_count() -> int:
  variables, _ = _shapes(models.MODELS.get("resnet50")(1000), (1, 224, 224, 3))
  flat = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  return sum(int(np.prod(v.shape)) for k, v in flat.items() if k.split("_")[0] in
             ("stage2", "stage3", "stage4"))


@pytest.mark.parametrize("name, branch_width", [("cresnet39", 32), ("cresnet39_coded", 96)])
def test_parameter_count_and_shapes(name, branch_width, resnet50_trunk_count):
  variables, (logits, aux) = _traced(name)
  expected = resnet50_trunk_count + 2 * _branch_count(96, branch_width) + 2048 * 10 + 10
  assert models.count_params(variables["params"]) == expected
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert aux["features"].shape == (2, 1, 1, 2048) and aux["pre_logits"].shape == (2, 2048)
  assert sorted(variables["params"])[:2] == ["branch1", "branch2"]


def test_table2_count_by_hand():
  """Table 2 on M = 96 latents: 23,361,802 = 23,282,688 (ResNet-50 layers 2-4, torchvision)
  + 2 x 29,312 (branches) + 20,490 (head)."""
  variables, _ = _traced("cresnet39")
  assert _branch_count(96, 32) == 29_312
  assert models.count_params(variables["params"]) == 23_361_802


def test_width_depth_and_space_to_depth_options():
  model = cresnet.CResNet(10, width=0.25, depth=0.5)
  variables, (_, aux) = _shapes(model, (2, 8, 8, 192))
  blocks = sorted(k for k in variables["params"] if k.startswith("stage"))
  assert blocks == ["stage1_block1", "stage1_block2", "stage2_block1", "stage2_block2",
                    "stage2_block3", "stage3_block1", "stage3_block2"]   # round(4, 6, 3 x 0.5)
  assert aux["pre_logits"].shape == (2, 512)                           # 4 x 512 x 0.25
  assert variables["params"]["branch1"]["conv1"]["kernel"].shape == (1, 1, 96, 8)
  pixels = cresnet.CResNet(10, width=0.25, input_channels=(3,), space_to_depth=4)
  variables, (logits, _) = _shapes(pixels, (2, 32, 32, 3))
  assert variables["params"]["branch1"]["conv1"]["kernel"].shape == (1, 1, 48, 8)
  assert logits.shape == (2, 10)


@pytest.mark.parametrize("name", ["hyperprior-q1", "hyperprior-q2", "hyperprior-q3",
                                  "hyperprior-q4"])
def test_shapes_through_the_network_for_each_rate_point(name):
  """The latents of a 32x32 image upsampled 4x (8x8) go through Table 2's network."""
  codec, params, _ = pretrained.load(name)
  images = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
  y_hat, sigma_hat = jax.eval_shape(lambda x: latents.latents(codec, params, x), images)
  assert y_hat.shape == sigma_hat.shape == (2, 8, 8, codec.num_latent)
  _, (logits, aux) = _traced("cresnet39", 2 * codec.num_latent)
  assert logits.shape == (2, 10) and aux["features"].shape == (2, 1, 1, 2048)


def test_space_to_depth_by_hand():
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  out = np.asarray(cresnet.space_to_depth(jnp.asarray(x), 2))
  assert out.shape == (2, 2, 2, 12)
  for i in range(2):
    for j in range(2):
      block = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
      np.testing.assert_array_equal(out[:, i, j], block.reshape(2, 12))


def test_aligned_crops_use_one_key():
  rng = np.random.default_rng(0)
  crop = jax.jit(lambda maps, k: cresnet.crop_flip(maps, k, size=8, pad=1))
  y = jnp.asarray(rng.standard_normal((16, 8, 8, 4)), jnp.float32)
  same_y, same_s = crop([y, y], KEY)
  np.testing.assert_array_equal(same_y, same_s)             # identical inputs, identical crops
  s = jnp.asarray(rng.standard_normal((16, 8, 8, 4)), jnp.float32)
  cy, cs = crop([y, s], KEY)
  (both,) = crop([jnp.concatenate([y, s], -1)], KEY)
  np.testing.assert_array_equal(jnp.concatenate([cy, cs], -1), both)
  # Every crop is a window of the zero-padded map, mirrored or not (hand check).
  padded = np.pad(np.asarray(y), ((0, 0), (1, 1), (1, 1), (0, 0)))
  flips = 0
  for b in range(16):
    views = [padded[b, r:r + 8, c:c + 8] for r in range(3) for c in range(3)]
    plain = any(np.array_equal(np.asarray(cy[b]), v) for v in views)
    mirrored = any(np.array_equal(np.asarray(cy[b]), v[:, ::-1]) for v in views)
    assert plain or mirrored
    flips += mirrored and not plain
  assert 0 < flips < 16
  other_y, _ = crop([y, s], jax.random.key(1, impl="rbg"))
  assert not np.array_equal(other_y, cy)


def test_evaluation_view_is_deterministic():
  y = jnp.arange(2 * 10 * 10 * 1, dtype=jnp.float32).reshape(2, 10, 10, 1)
  cy, cs = cresnet.center_crop([y, y + 1], size=8)
  np.testing.assert_array_equal(cy, y[:, 1:9, 1:9])
  np.testing.assert_array_equal(cs, y[:, 1:9, 1:9] + 1)
  (resized,) = cresnet.center_crop([y], size=4, resize=6)   # report 004: resize 32, crop 28
  assert resized.shape == (2, 4, 4, 1)


@pytest.mark.slow   # compiles a training-mode pass: ~1 min of loaded CPU
def test_small_models_run_and_batch_norm_updates():
  model = cresnet.CResNet(10, width=0.125, depth=0.1)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8, 8, 24)), jnp.float32)
  variables = jax.jit(model.init)(KEY, x)
  (logits, _), updates = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                          mutable=["batch_stats"]))(variables, x)
  assert np.all(np.isfinite(logits))
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="too small for the network"):
    _shapes(models.MODELS.get("cresnet39")(10), (1, 4, 4, 192))
  with pytest.raises(ValueError, match="input_channels"):
    _shapes(cresnet.CResNet(10, input_channels=(96, 90)), (1, 8, 8, 192))
  with pytest.raises(ValueError, match="crop size"):
    cresnet.crop_flip([jnp.zeros((1, 4, 4, 2))], KEY, size=8, pad=1)
  with pytest.raises(ValueError, match="one batch and size"):
    cresnet.center_crop([jnp.zeros((1, 8, 8, 2)), jnp.zeros((1, 4, 4, 2))], size=4)
