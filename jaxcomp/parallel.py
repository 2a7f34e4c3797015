"""Device mesh, shardings, and host batches -> global arrays.

One code path from one CPU to a TPU pod: a 2-D mesh ("data", "model") over all
devices; batches are sharded on "data", parameters replicated, except (option)
large parameters, sharded on "model" along their largest divisible axis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


# Set by launch/multihost.sh (or by hand): the coordinator and this process's place.
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"   # host:port of process 0 (read by JAX too)
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"
# Set by launch/tpu_vm.sh and launch/slurm.sh: initialise, and let JAX read the
# scheduler's environment (Cloud TPU metadata, SLURM_* of the job step).
DISTRIBUTED_ENV = "JAXCOMP_DISTRIBUTED"


def distributed_kwargs(env: Mapping[str, str]) -> dict[str, Any] | None:
  """The arguments of `jax.distributed.initialize` that an environment calls for.

  Args:
    env: environment variables (`os.environ`).

  Returns:
    None for a single-process run; else the keyword arguments ({} = JAX detects
    everything from the scheduler), in this order of precedence:
    * `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
      (hosts without a scheduler, `launch/multihost.sh`); JAX itself reads
      `JAX_LOCAL_DEVICE_IDS` for the devices a process owns;
    * `JAXCOMP_DISTRIBUTED=1` (the TPU and SLURM launchers), a SLURM job step of
      more than one task (`SLURM_STEP_NODELIST` with `SLURM_NTASKS` > 1), or a
      GKE TPU slice (`TPU_WORKER_HOSTNAMES`, `MEGASCALE_COORDINATOR_ADDRESS`).

  Raises:
    ValueError: a coordinator without a process count and id, or values that
      are not integers with 0 <= id < count.
  """
  if env.get(COORDINATOR_ENV):
    missing = [k for k in (NUM_PROCESSES_ENV, PROCESS_ID_ENV) if not env.get(k)]
    if missing:
      raise ValueError(f"{COORDINATOR_ENV}={env[COORDINATOR_ENV]} is set but "
                       f"{' and '.join(missing)} not (launch/multihost.sh sets all three)")
    try:
      count, index = int(env[NUM_PROCESSES_ENV]), int(env[PROCESS_ID_ENV])
    except ValueError:
      raise ValueError(f"{NUM_PROCESSES_ENV}={env[NUM_PROCESSES_ENV]!r} and {PROCESS_ID_ENV}="
                       f"{env[PROCESS_ID_ENV]!r} must be integers") from None
    if not 0 <= index < count:
      raise ValueError(f"{PROCESS_ID_ENV}={index} must be in [0, {NUM_PROCESSES_ENV}={count})")
    return {"coordinator_address": env[COORDINATOR_ENV], "num_processes": count,
            "process_id": index}
  slurm_step = env.get("SLURM_STEP_NODELIST") and int(env.get("SLURM_NTASKS") or 1) > 1
  if (env.get(DISTRIBUTED_ENV) == "1" or slurm_step or env.get("TPU_WORKER_HOSTNAMES")
      or env.get("MEGASCALE_COORDINATOR_ADDRESS")):
    return {}
  return None


def initialize_distributed() -> None:
  """Calls `jax.distributed.initialize` on multi-process jobs (`distributed_kwargs`).

  A single-process run, or one already initialised, is left alone.
  """
  kwargs = distributed_kwargs(os.environ)
  if kwargs is not None and not jax.distributed.is_initialized():
    jax.distributed.initialize(**kwargs)


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
