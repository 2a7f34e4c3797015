"""The compressed-domain task: cached latents, frozen vs joint encoder, baselines, errors.

Real data: 48 images of the CIFAR-10 (JPEG q75) sample shipped with jaxcomp,
upsampled 4x and coded by the shipped `hyperprior-q1`. References: the codec's
own `latents` of the same images, `compression.estimate_bits` (the rate the
likelihoods predict), the pretrained parameters themselves (frozen mode).
"""

from __future__ import annotations

import importlib.util
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import checkpoint, config_lib, parallel, train
from jaxcomp.codecs import compression, latents, learned, pretrained
from jaxcomp.tasks import compressed_domain

ROOT = pathlib.Path(__file__).resolve().parents[2]
MESH = parallel.create_mesh(1, jax.devices()[:1])


def _config(arg: str, cache_dir: pathlib.Path, **overrides):
  spec = importlib.util.spec_from_file_location("compressed_domain_cfg",
                                                ROOT / "configs" / "compressed_domain.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("runlocal=True,quality=1," + arg)
  c.data.num_train_examples, c.data.num_eval_examples = 32, 16
  c.train.batch_size, c.eval.batch_size = 8, 8
  c.data.cache_dir = str(cache_dir)
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config_lib.validate(c)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("latent_cache")


@pytest.fixture(scope="module")
def frozen(cache_dir):
  return compressed_domain.CompressedDomainTask(_config("", cache_dir), MESH)


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def _trainer_and_state(task):
  trainer = train.Trainer(task.config, task, MESH)
  batch = next(task.train_iterator(seed=0, start_step=0))
  return trainer, trainer.prepare(trainer.init_state(batch)), batch


def test_config_variants(cache_dir):
  c = _config("", cache_dir)
  assert c.task == "compressed_domain" and c.compressed_domain.codec == "hyperprior-q1"
  assert c.optim_groups == (("^codec/", "frozen"),)
  joint = _config("encoder=joint,rate_weight=0.5", cache_dir)
  assert [g[0] for g in joint.optim_groups] == ["^codec/g_s/",
                                                "^codec/entropy_bottleneck/quantiles$", "^codec/"]
  assert joint.compressed_domain.rate_weight == 0.5
  assert _config("variant=pixels", cache_dir).optim_groups == ()
  with pytest.raises(config_lib.ConfigError):
    _config("variant=jpeg", cache_dir)
  with pytest.raises(config_lib.ConfigError, match="rate_weight"):
    _config("", cache_dir, **{"compressed_domain.rate_weight": -1.0})


@pytest.mark.slow   # codes 48 images and compiles the latent maps: minutes of loaded CPU
def test_cached_latents_equal_fresh_ones(frozen, monkeypatch):
  ds = compressed_domain.data_lib.get_dataset(frozen.config.data, "train")
  images, labels = ds.read(np.arange(len(ds)))
  coded = compressed_domain.upsample(jnp.asarray(images), 4)
  assert coded.shape == (32, 128, 128, 3) and coded.dtype == jnp.uint8
  y_hat, sigma_hat = jax.jit(lambda p, x: latents.latents(frozen.codec, p, x))(
      frozen.codec_params, coded.astype(jnp.float32) / 255.0)
  maps = frozen.train_ds.source.images
  assert maps.shape == (32, 8, 8, 2 * 96) and frozen.train_ds.image_shape == (8, 8, 192)
  np.testing.assert_array_equal(maps[..., :96], y_hat)
  np.testing.assert_allclose(maps[..., 96:], sigma_hat, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(frozen.train_ds.source.labels, labels)
  # The cached bits are the likelihoods' prediction for the real stream.
  expected = compression.estimate_bits(frozen.codec, frozen.codec_params, np.asarray(coded[0]))
  np.testing.assert_allclose(frozen.train_bits[0], sum(expected.values()), rtol=1e-4)
  # A second task reads the cache: nothing is encoded again.
  monkeypatch.setattr(compressed_domain, "encode_dataset", lambda *a, **k: 1 / 0)
  again = compressed_domain.CompressedDomainTask(frozen.config, MESH)
  np.testing.assert_array_equal(again.train_ds.source.images, maps)


@pytest.mark.slow   # compiles a training step and the evaluation: minutes of loaded CPU
def test_frozen_mode_leaves_the_encoder_bit_identical(frozen):
  trainer, state, batch = _trainer_and_state(frozen)
  pretrained_params = _flat(frozen.codec_params)
  before = _flat(state.params["classifier"])
  assert all(np.array_equal(v, pretrained_params[k]) for k, v in _flat(
      state.params["codec"]).items())          # prepare loaded the pretrained codec
  for _ in range(2):
    state, metrics = trainer.step_fn(state, parallel.host_to_global(batch, MESH))
  assert np.isfinite(float(metrics["loss"]))
  codec = _flat(state.params["codec"])
  assert codec.keys() == pretrained_params.keys()
  for k, v in codec.items():
    np.testing.assert_array_equal(v, pretrained_params[k], err_msg=k)
  after = _flat(state.params["classifier"])
  assert any(not np.array_equal(after[k], before[k]) for k in before)
  result = frozen.evaluate(trainer.eval_variables(state), MESH)
  assert result["num_examples"] == 16 and 0 <= result["accuracy"] <= 1
  np.testing.assert_allclose(result["bpp"], np.mean(frozen.eval_bits) / 1024, rtol=1e-6)


@pytest.mark.slow   # codes the data of the frozen fixture: minutes of loaded CPU
def test_prepare_checks_the_codec_groups(cache_dir, frozen):
  batch = next(frozen.train_iterator(seed=0, start_step=0))
  shapes = jax.eval_shape(frozen.init_variables, jax.random.key(0, impl="rbg"), batch)
  state = train.TrainState(step=0, params=shapes["params"], collections={}, opt_state=(),
                           ema_params={}, rng=None)
  task = compressed_domain.CompressedDomainTask(_config("", cache_dir, optim_groups=()), MESH)
  with pytest.raises(ValueError, match="must freeze every codec parameter"):
    task.prepare(state)
  joint = compressed_domain.CompressedDomainTask(frozen.config, MESH)
  joint.joint = True          # a joint run whose groups freeze the whole codec
  with pytest.raises(ValueError, match="needs trainable codec parameters"):
    joint.prepare(state)


@pytest.mark.slow   # compiles the codec's backward pass: ~1 min of CPU
def test_joint_mode_changes_the_encoder_and_a_rate_weight_lowers_the_bpp(cache_dir):
  task = compressed_domain.CompressedDomainTask(
      _config("encoder=joint,rate_weight=1000.0", cache_dir), MESH)
  trainer, state, batch = _trainer_and_state(task)
  start = _flat(state.params["codec"])
  global_batch = parallel.host_to_global(batch, MESH)
  rate = jax.jit(lambda v, b: task.loss(v, b, jax.random.key(0), train=False)[1][0]["bpp"])
  bpp_before = float(rate(trainer.eval_variables(state), global_batch))
  for _ in range(4):
    state, metrics = trainer.step_fn(state, global_batch)
  bpp_after = float(rate(trainer.eval_variables(state), global_batch))
  assert bpp_after < bpp_before, (bpp_before, bpp_after)
  end = _flat(state.params["codec"])
  changed = {k for k in end if not np.array_equal(end[k], start[k])}
  assert any(k.startswith("g_a/") for k in changed) and any(k.startswith("h_s/") for k in changed)
  assert not any(k.startswith("g_s/") or k.endswith("quantiles") for k in changed)  # frozen
  assert np.isfinite(float(metrics["loss"])) and float(metrics["bpp"]) > 0


@pytest.mark.slow   # compiles the pixel cResNet: minutes of loaded CPU
def test_pixel_baseline_uses_the_same_trunk(cache_dir):
  task = compressed_domain.CompressedDomainTask(_config("variant=pixels", cache_dir), MESH)
  batch = next(task.train_iterator(seed=0, start_step=0))
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
  variables = jax.jit(task.init_variables)(jax.random.key(0, impl="rbg"), batch)
  assert "codec" not in variables["params"]
  kernel = variables["params"]["classifier"]["branch1"]["conv1"]["kernel"]
  assert kernel.shape[2] == 48                  # 4x4 space-to-depth: the latents' 8x8 grid
  loss, (scalars, _) = jax.jit(lambda v, b: task.loss(v, b, jax.random.key(0), train=False))(
      variables, batch)
  assert np.isfinite(float(loss)) and "bpp" not in scalars


@pytest.mark.slow   # decodes the data once (the synthesis transform): ~1 min of CPU
def test_decoded_baseline_reads_reconstructions(cache_dir):
  task = compressed_domain.CompressedDomainTask(_config("variant=decoded", cache_dir), MESH)
  ds = compressed_domain.data_lib.get_dataset(task.config.data, "test")
  original, _ = ds.read(np.arange(len(ds)))
  decoded = task.eval_ds.source.images
  assert decoded.shape == original.shape and decoded.dtype == np.uint8
  mse = np.mean((decoded.astype(np.float64) - original) ** 2)
  assert 15 < 10 * np.log10(255 ** 2 / mse) < 40       # a lossy reconstruction of the image
  assert task.eval_bits.shape == (16,) and np.all(task.eval_bits > 0)


@pytest.mark.slow   # two short runs of the trainer
def test_a_run_starts_from_the_classifier_of_another(cache_dir, tmp_path):
  first = _config("", cache_dir, **{"train.num_steps": 2})
  train.train_and_evaluate(first, str(tmp_path / "frozen"))
  saved = _flat(checkpoint.read_run(tmp_path / "frozen")[1]["params"]["classifier"])
  task = compressed_domain.CompressedDomainTask(
      _config("encoder=joint", cache_dir,
              **{"compressed_domain.init_from": str(tmp_path / "frozen")}), MESH)
  _, state, _ = _trainer_and_state(task)
  loaded = _flat(state.params["classifier"])
  assert loaded.keys() == saved.keys()
  for k, v in loaded.items():
    np.testing.assert_array_equal(v, saved[k], err_msg=k)
  pixels = compressed_domain.CompressedDomainTask(
      _config("variant=pixels", cache_dir,
              **{"compressed_domain.init_from": str(tmp_path / "frozen")}), MESH)
  with pytest.raises(ValueError, match="holds no classifier of this architecture"):
    _trainer_and_state(pixels)


def test_bad_configurations_are_refused(cache_dir, tmp_path):
  with pytest.raises(ValueError, match="too small for the network"):
    compressed_domain.CompressedDomainTask(
        _config("", cache_dir, **{"compressed_domain.crop": 4}), MESH)
  with pytest.raises(ValueError, match="multiples of the codec's 64"):
    compressed_domain.CompressedDomainTask(
        _config("", cache_dir, **{"compressed_domain.upsample": 3}), MESH)
  with pytest.raises(ValueError, match="not a compressed-domain network"):
    compressed_domain.CompressedDomainTask(_config("", cache_dir, **{"model.name": "resnet20"}),
                                           MESH)
  with pytest.raises(ValueError, match="compressed_domain.input"):
    compressed_domain.CompressedDomainTask(
        _config("", cache_dir, **{"compressed_domain.input": "jpeg"}), MESH)
  with pytest.raises(ValueError, match="neither a shipped model"):
    compressed_domain.load_codec("hyperprior-q9")
  factorized = learned.build("factorized", num_filters=8, num_latent=8)
  shapes = jax.eval_shape(factorized.init, jax.random.key(0, impl="rbg"),
                          jnp.zeros((1, 64, 64, 3)))["params"]
  params = jax.tree.map(lambda v: np.zeros(v.shape, v.dtype), shapes)   # values do not matter
  pretrained.save(tmp_path / "factorized.npz", factorized, params)
  with pytest.raises(ValueError, match="not a hyperprior codec"):
    compressed_domain.load_codec(str(tmp_path / "factorized.npz"))
