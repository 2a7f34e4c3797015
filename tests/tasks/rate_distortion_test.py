"""Tests of the rate-distortion task: data, parameter groups, loss, a few optimizer steps.

Model inits use rbg keys: XLA compiles threefry (the default) ~7x slower on CPU.
"""

from __future__ import annotations

import importlib.util
import pathlib

import flax
import jax
import numpy as np
import optax
import pytest

from jaxcomp import config_lib, data as data_lib, optim, parallel
from jaxcomp.tasks import rate_distortion

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(arg: str):
  spec = importlib.util.spec_from_file_location("bmshj2018", ROOT / "configs" / "bmshj2018.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg)
  c.data.path = str(data_lib.sample_kodak_dir())   # 2 packaged images: fast to load
  c.codec.eval_path = str(data_lib.sample_kodak_dir())
  return config_lib.validate(c)


@pytest.fixture(scope="module")
def task():
  return rate_distortion.RateDistortionTask(_config("runlocal=True"), parallel.create_mesh(1))


def test_config_variants():
  c = _config("quality=5")
  assert c.codec.quality == 5 and c.codec.architecture == "hyperprior" and c.codec.crop == 256
  assert rate_distortion.rd_lambda(c.codec) == 0.025                     # SPEC Sec. 3
  assert _config("variant=factorized,small=True").codec.num_filters == 64
  with pytest.raises(config_lib.ConfigError):
    _config("quality=x")


def test_batches_are_a_function_of_seed_and_step(task):
  a = next(task.train_iterator(seed=3, start_step=5))["image"]
  it = task.train_iterator(seed=3, start_step=4)
  next(it)
  b = next(it)["image"]
  np.testing.assert_array_equal(a, b)
  assert a.shape == (8, 64, 64, 3) and a.dtype == np.uint8
  c = next(task.train_iterator(seed=4, start_step=5))["image"]
  assert not np.array_equal(a, c)


def test_loss_labels_and_a_few_steps(task):
  batch = next(task.train_iterator(seed=0, start_step=0))
  variables = jax.jit(task.init_variables)(jax.random.key(0, impl="rbg"), batch)
  labels = optim.group_labels(variables["params"], task.config.optim_groups)
  flat = flax.traverse_util.flatten_dict(labels, sep="/")
  assert flat["entropy_bottleneck/quantiles"] == "aux_optim"
  assert {v for k, v in flat.items() if not k.endswith("quantiles")} == {"optim"}
  tx = optax.multi_transform({"optim": optax.adam(1e-3), "aux_optim": optax.adam(1e-2)}, labels)
  params, state = variables["params"], tx.init(variables["params"])

  @jax.jit
  def step(params, state, batch, key):
    grad_fn = jax.value_and_grad(lambda p: task.loss({"params": p}, batch, key, train=True),
                                 has_aux=True)
    (_, (metrics, _)), grads = grad_fn(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, metrics

  history = []
  for s in range(3):
    params, state, metrics = step(params, state, batch, jax.random.key(s, impl="rbg"))
    history.append(jax.device_get(metrics))
  for m in history:
    assert all(np.isfinite(v) for v in m.values())
    # loss = R + lambda 255^2 MSE + aux (Balle 2018, Eq. 2 with CompressAI's scaling).
    np.testing.assert_allclose(m["loss"], m["bpp"] + task.lmbda * 255 ** 2 * m["mse"]
                               + m["aux_loss"], rtol=1e-5)
  assert history[-1]["aux_loss"] < history[0]["aux_loss"]      # quantiles move


def test_evaluate(task):
  batch = next(task.train_iterator(seed=0, start_step=0))
  variables = jax.jit(task.init_variables)(jax.random.key(0, impl="rbg"), batch)
  out = task.evaluate(variables, task.mesh)
  assert out["num_images"] == 1 and out["bpp"] > 0 and 0 < out["ms_ssim"] <= 1
  assert np.isclose(out["bpp"], out["bpp_y"] + out["bpp_z"], rtol=1e-6)


@pytest.mark.slow
def test_main_runs_end_to_end(tmp_path):
  from jaxcomp import train  # pylint: disable=g-import-not-at-top
  summary = train.train_and_evaluate(_config("runlocal=True"), str(tmp_path))
  assert summary["final_step"] == 4 and np.isfinite(summary["eval"]["psnr"])
