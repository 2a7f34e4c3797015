"""Device mesh, shardings, and host batches -> global arrays.

One code path from one CPU to a TPU pod: a 2-D mesh ("data", "model") over all
devices; batches are sharded on "data", parameters replicated, except (option)
large parameters, sharded on "model" along their largest divisible axis.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` on multi-host jobs (TPU pods, SLURM, ...).

  A single-process run (no coordinator in the environment) is left alone.
  """
  multi_host_env = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
                    "SLURM_JOB_NUM_NODES", "MEGASCALE_COORDINATOR_ADDRESS")
  if any(os.environ.get(k) for k in multi_host_env) and not jax.distributed.is_initialized():
    jax.distributed.initialize()


def create_mesh(model_axis: int = 1, devices: list[jax.Device] | None = None) -> Mesh:
  """A ("data", "model") mesh over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else devices
  if len(devices) % model_axis:
    raise ValueError(f"parallel.model_axis={model_axis} does not divide the "
                     f"{len(devices)} devices")
  grid = np.asarray(devices).reshape(len(devices) // model_axis, model_axis)
  return Mesh(grid, ("data", "model"))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data"."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shardings(params: Any, mesh: Mesh, min_size: int) -> Any:
  """Replicated shardings, except leaves with >= `min_size` elements on "model".

  A large leaf is split along its largest axis divisible by the "model" size;
  with a model axis of 1 everything is replicated.
  """
  n = mesh.shape["model"]

  def one(x):
    shape = getattr(x, "shape", ())
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
      return replicated(mesh)
    axes = [a for a in np.argsort(shape)[::-1] if shape[a] % n == 0]
    if not axes:
      return replicated(mesh)
    spec = [None] * len(shape)
    spec[axes[0]] = "model"
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(one, params)


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
  n = mesh.shape["data"]
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise ValueError(f"batch size {global_batch_size} must be divisible by the "
                     f"{n} data-parallel devices and {jax.process_count()} processes")


def host_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles per-process batches into global arrays sharded on "data"."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
