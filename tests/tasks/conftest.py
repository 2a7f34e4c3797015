"""Fixtures shared by the task tests."""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
import pytest

from jaxcomp import config_lib


@pytest.fixture(scope="session")
def tiny_repr_config() -> Callable[..., ml_collections.ConfigDict]:
  """A factory of validated RePr configs: C^3(8) on 64 images of the packaged
  CIFAR-10 (JPEG q75) sample, batch 16, 8 steps of SGD momentum, S1 = S2 = 2 steps,
  2 rounds; keyword arguments override `config.repr` fields."""

  def make(**repr_overrides) -> ml_collections.ConfigDict:
    c = config_lib.base_config()
    c.task = "repr"
    c.data.name = "cifar10_sample"
    c.data.num_train_examples = 64
    c.data.num_eval_examples = 64
    c.data.augment = "none"
    c.model.name = "convnet"
    c.model.width = 8
    c.train.batch_size = 16
    c.eval.batch_size = 32
    c.train.num_steps = 8
    c.train.progress_bar = False
    c.optim = config_lib.optimizer_config(name="momentum", learning_rate=0.05,
                                          weight_decay=5e-4, schedule="constant")
    c.repr.s1_steps, c.repr.s2_steps, c.repr.rounds = 2, 2, 2
    for k, v in repr_overrides.items():
      c.repr[k] = v
    return config_lib.validate(c)

  return make
