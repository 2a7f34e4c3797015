"""The MS-ROI network (thesis 001, Sec. 2.3), its maps (Eq. 2.4-2.5), Aug-MSROI (Sec. 3.6)
and the training composites; the shipped weights."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.transform import resize

from jaxcomp.msroi import maps, network, train_network


@pytest.fixture(scope="module")
def tiny():
  """A small random MS-ROI network (3 blocks, stride 8) and its variables."""
  model = network.MSROINet(num_classes=6, widths=(4, 6, 8), class_features=2)
  # An "rbg" key: XLA:CPU compiles its bit generator far faster than threefry's (models_test.py).
  return model, jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (33, 95)])
def test_network_shapes_any_size(tiny, size):
  model, variables = tiny
  x = jax.random.uniform(jax.random.key(1), (2, *size, 3))
  logits, aux = jax.jit(model.apply)(variables, x)
  h, w = -(-size[0] // 8), -(-size[1] // 8)   # ceil: the SAME poolings keep partial cells
  assert logits.shape == (2, 6) and logits.dtype == jnp.float32
  assert aux["class_maps"].shape == (2, h, w, 6) and aux["features"].shape == (2, h, w, 8)
  # Eq. 2.4 (as a mean) + the offset: logits = mean_xy M_c + b_c.
  np.testing.assert_allclose(logits, aux["class_maps"].mean(axis=(1, 2))
                             + variables["params"]["offset"], rtol=1e-5, atol=1e-6)
  assert network.from_variables(variables) == model


def test_registered_in_the_zoo_with_batch_norm_and_normalised_input():
  from jaxcomp import models
  model = models.MODELS.get("msroinet")(num_classes=6, dtype=jnp.float32, widths=(4, 6),
                                        class_features=2)
  assert model.batch_norm and not model.unit_input
  x = jax.random.normal(jax.random.key(1), (3, 9, 12, 3))   # normalised images, any size
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  (logits, aux), updates = jax.jit(functools.partial(model.apply, train=True,
                                                     mutable=["batch_stats"]))(variables, x)
  assert set(updates["batch_stats"]) == {"conv1_1_bn", "conv1_2_bn", "conv2_1_bn", "conv2_2_bn"}
  # The zoo's contract: features [B, h, w, C] and pre_logits [B, D]; here
  # logits_c = sum_d w_d^c pre_logits_{c, d} + b_c (the class layer is the head).
  params = variables["params"]
  assert aux["features"].shape == (3, 3, 3, 6) and aux["pre_logits"].shape == (3, 12)
  want = jnp.einsum("bcd,cd->bc", aux["pre_logits"].reshape(3, 6, 2), params["class_weights"])
  np.testing.assert_allclose(logits, want + params["offset"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fold_batch_norm_is_exact_at_inference():
  model = network.MSROINet(num_classes=3, widths=(4, 8), class_features=2, batch_norm=True)
  x = jax.random.uniform(jax.random.key(0), (2, 19, 23, 3))
  variables = model.init(jax.random.key(1), x)
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])  # real stats
  variables = {"params": jax.tree_util.tree_map(
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), variables["params"]),
      **updates}
  folded = network.fold_batch_norm(variables)
  plain = network.from_variables(folded)
  assert not plain.batch_norm and network.from_variables(variables).batch_norm
  want, aux_want = model.apply(variables, x)
  got, aux_got = plain.apply(folded, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux_got["class_maps"], aux_want["class_maps"], rtol=1e-5, atol=1e-5)


def _code_reference(per_class_maps: list[np.ndarray]) -> np.ndarray:
  """generate_map.py of iamaaditya/image-compression-cnn: maps best first."""
  norm = lambda m: (m - m.min()) / (m.max() - m.min())
  roi = None
  for m in per_class_maps[::-1]:            # from the k-th best upwards
    roi = 1.2 * norm(m) if roi is None else (roi + norm(m)) / 2
  return norm(roi)


def test_combine_class_maps_closed_forms():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(2, 3, 4, 7)).astype(np.float32)
  logits = rng.normal(size=(2, 7)).astype(np.float32)
  combine = jax.jit(functools.partial(maps.combine_class_maps, image_size=(3, 4), stride=1),
                    static_argnames=("method", "top_k"))
  for b in range(2):
    order = np.argsort(-logits[b])
    # Sec. 2.3: the top 5 by score, weighted by rank (5, 4, 3, 2, 1), of the ReLU'd maps.
    want = sum((5 - i) * np.maximum(m[b, ..., c], 0) for i, c in enumerate(order[:5]))
    np.testing.assert_allclose(combine(m, logits, method="top5")[b], want / want.max(),
                               rtol=1e-5, atol=1e-6)
    # Eq. 2.5: the classes whose score exceeds T.
    want = sum(np.maximum(m[b, ..., c], 0) for c in range(7) if logits[b, c] > 0.3)
    np.testing.assert_allclose(combine(m, logits, method="threshold", threshold=0.3)[b],
                               want / want.max(), rtol=1e-5, atol=1e-6)
    want = _code_reference([m[b, ..., c] for c in order[:4]])
    np.testing.assert_allclose(combine(m, logits, method="code", top_k=4)[b], want,
                               rtol=1e-5, atol=1e-6)
  none = combine(m, logits, method="threshold", threshold=10.0)   # no class above T
  np.testing.assert_array_equal(none, np.zeros((2, 3, 4)))


def test_upsampling_is_bilinear_and_aligned_with_the_cells():
  rng = np.random.default_rng(1)
  m = rng.random((1, 3, 2, 1)).astype(np.float32)
  got = maps.combine_class_maps(m, np.ones((1, 1), np.float32), image_size=(90, 57), stride=32,
                                top_k=1)
  # skimage's order-1 resize uses the same half-pixel centres and edge replication;
  # the [96, 64] result is cropped to the image's [90, 57].
  want = resize(m[0, ..., 0], (96, 64), order=1, mode="edge", anti_aliasing=False)[:90, :57]
  np.testing.assert_allclose(got[0], want / want.max(), rtol=1e-5, atol=1e-6)
  hot = np.zeros((1, 3, 2, 1), np.float32)
  hot[0, 1, 1, 0] = 1.0
  peak = np.unravel_index(np.argmax(maps.combine_class_maps(
      hot, np.ones((1, 1), np.float32), image_size=(90, 57), stride=32, top_k=1)[0]), (90, 57))
  assert 32 <= peak[0] < 64 and 32 <= peak[1] < 57   # inside cell (1, 1)'s pixels


def test_saliency_map_with_the_shipped_weights():
  assert network.DEFAULT_WEIGHTS in network.list_weights()
  model, variables, meta = network.pretrained()
  assert model.num_classes == len(meta["class_names"]) == 10
  assert not model.batch_norm and "jaxcomp.msroi.train_network" in meta["command"]
  x = jax.random.uniform(jax.random.key(0), (2, 45, 71, 3))
  s = jax.jit(maps.saliency_map)(x)
  assert s.shape == (2, 45, 71) and s.dtype == jnp.float32
  assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
  with pytest.raises(ValueError, match="unknown MS-ROI weights"):
    network.pretrained("nope")


@pytest.mark.slow
def test_every_method_and_short_side_with_the_shipped_weights():
  x = jax.random.uniform(jax.random.key(0), (2, 45, 71, 3))
  for method in maps.METHODS:
    s = jax.jit(functools.partial(maps.saliency_map, method=method))(x)
    assert s.shape == (2, 45, 71) and s.dtype == jnp.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
  small = jax.jit(functools.partial(maps.saliency_map, short_side=24))(x)   # net sees 24x38
  assert small.shape == (2, 45, 71) and 0.0 <= float(small.min()) <= float(small.max()) <= 1.0


def test_aug_msroi_reduces_to_msroi(tiny):
  _, variables = tiny
  x = jax.random.uniform(jax.random.key(3), (3, 29, 41, 3))
  plain = jax.jit(lambda x: maps.saliency_map(x, variables=variables))(x)
  same = jax.jit(functools.partial(maps.aug_msroi_map, variables=variables, num_perturbations=1,
                                   input_noise=0.0, jitter=0, activation_noise=0.0))
  np.testing.assert_array_equal(same(x, jax.random.key(0)), plain)


@pytest.mark.slow
def test_aug_msroi_is_seeded_and_perturbs(tiny):
  _, variables = tiny
  x = jax.random.uniform(jax.random.key(3), (3, 29, 41, 3))
  plain = maps.saliency_map(x, variables=variables)
  noisy = jax.jit(functools.partial(maps.aug_msroi_map, variables=variables, num_perturbations=3,
                                    input_noise=0.05, jitter=4, activation_noise=0.2,
                                    dropout_rate=0.1))
  a = noisy(x, jax.random.key(1))
  np.testing.assert_array_equal(a, noisy(x, jax.random.key(1)))
  assert a.shape == plain.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  assert float(jnp.abs(a - plain).max()) > 1e-3


def test_shift_is_undone_by_the_opposite_shift():
  x = jnp.arange(2 * 6 * 7, dtype=jnp.float32).reshape(2, 6, 7)
  s = maps._shift(x, jnp.int32(2), jnp.int32(-1), 3)
  np.testing.assert_array_equal(s[:, 0, 1:], x[:, 2, :-1])     # out[i, j] = x[i + 2, j - 1]
  back = maps._shift(s, jnp.int32(-2), jnp.int32(1), 3)
  np.testing.assert_array_equal(back[:, 2:, :-1], x[:, 2:, :-1])  # away from the edges


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="cam"), "unknown method"), (dict(top_k=11), "top_k"),
])
def test_map_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    maps.saliency_map(jnp.zeros((1, 8, 8, 3)), **kwargs)


def test_bad_images():
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    maps.saliency_map(jnp.full((1, 8, 8, 3), 2.0))
  with pytest.raises(ValueError, match="shape"):
    maps.saliency_map(jnp.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="not the variables"):
    network.from_variables({"params": {"conv1_1": {}}})


def test_composites_and_metrics():
  rng = np.random.default_rng(0)
  objects = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(40) % 10
  backgrounds = [rng.integers(0, 256, (120, 150, 3), dtype=np.uint8) for _ in range(2)]
  d = train_network.composites(rng, objects, labels, backgrounds, n=16, num_classes=10,
                               canvas=64)
  assert d["images"].shape == (16, 64, 64, 3) and d["images"].dtype == np.uint8
  present = d["boxes"][..., 2] > 0
  np.testing.assert_array_equal(d["targets"].sum(1), present.sum(1))   # one box per label
  assert present.sum(1).min() >= 1 and present.sum(1).max() <= 3
  b = d["boxes"][present]
  assert b.min() >= 0 and (b[:, 0] + b[:, 2]).max() <= 64 and (b[:, 1] + b[:, 3]).max() <= 64
  mask = train_network.box_masks(np.array([[[1, 2, 3, 4], [-1, -1, -1, -1]]]), 8)
  assert mask.sum() == 12 and mask[0, 1:4, 2:6].all()
  # AP by hand: ranks of the positives 1 and 3 -> (1/1 + 2/3) / 2.
  ap = train_network.average_precision(np.array([[.9], [.8], [.7], [.6]]),
                                       np.array([[1.], [0.], [1.], [0.]]))
  np.testing.assert_allclose(ap, [(1 + 2 / 3) / 2])


@pytest.mark.slow
def test_train_two_steps_on_the_packaged_sample(tmp_path):
  from jaxcomp.data import sample_kodak_dir
  variables, meta = train_network.train(
      workdir=tmp_path, photos=sample_kodak_dir(), steps=2, batch_size=4, plain_batch_size=4,
      canvas=64, widths=(4, 8), class_features=2, num_eval=8, log_every=1,
      dataset="cifar10_sample", held_out_photos=1)
  assert not network.from_variables(variables).batch_norm
  assert 0.0 <= meta["held_out"]["mAP"] <= 1.0 and (tmp_path / "weights.npz").is_file()
