"""Fixtures of the data tests: one decoded-array cache for the whole session."""

from __future__ import annotations

import os
from typing import Callable

import ml_collections
import pytest

from jaxcomp import config_lib, data


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
  """A cache folder for this test run (shared by xdist workers: decode the big zip once)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  path = base / "jaxcomp_data_cache"
  path.mkdir(exist_ok=True)
  return str(path)


@pytest.fixture(scope="session")
def data_config(data_cache, shared_data) -> Callable[..., ml_collections.ConfigDict]:
  """`data_config(name=..., **overrides)`: base_config().data reading the shared data."""

  def make(**overrides) -> ml_collections.ConfigDict:
    c = config_lib.base_config().data
    c.cache_dir = data_cache
    c.update(overrides)
    return c

  return make


@pytest.fixture(scope="session")
def cifar(data_config, shared_data) -> dict[str, data.ImageDataset]:
  """The full CIFAR-10 (JPEG q75) zip, decoded once per run."""
  c = data_config(name="cifar10_jpeg75", path=str(shared_data / "cifar10_jpeg75.zip"))
  return {s: data.get_dataset(c, s) for s in ("train", "test")}


@pytest.fixture(scope="session")
def sample(data_config) -> dict[str, data.ImageDataset]:
  """The packaged sample (the default dataset of base_config)."""
  c = data_config()
  return {s: data.get_dataset(c, s) for s in ("train", "test")}
