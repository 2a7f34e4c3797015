"""Trained codec parameters: the models shipped in `jaxcomp/codecs/weights/` and user checkpoints.

A shipped model is one `.npz` file: every parameter under its '/'-joined path
(float32 or float16), plus `__meta__`, a JSON object with at least
`architecture`, `num_filters`, `num_latent`, `gdn` (and how it was trained).
`load(name)` rebuilds the Flax module and the parameter tree with no network
and no orbax; `load_checkpoint(workdir)` reads a `jaxcomp.main` run directory
(its `config.json` and latest orbax checkpoint).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax
import flax.linen as nn
import numpy as np

from jaxcomp.codecs import learned

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
_META = "__meta__"


def list_models() -> list[str]:
  """Names of the shipped models (e.g. "factorized-q3"), sorted."""
  return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def save(path: str | pathlib.Path, model: nn.Module, params: Any, *,
         dtype: str = "float32", **metadata: Any) -> None:
  """Writes `params` of `model` (with `metadata`) as a weights `.npz` file."""
  meta = {"architecture": learned.architecture_of(model), "num_filters": model.num_filters,
          "num_latent": model.num_latent or model.num_filters, "gdn": model.gdn, **metadata}
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  arrays = {k: np.asarray(v).astype(dtype) for k, v in flat.items()}
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays, **{_META: np.asarray(json.dumps(meta, sort_keys=True))})


def load_file(path: str | pathlib.Path) -> tuple[nn.Module, dict, dict]:
  """`(model, params, metadata)` from a weights `.npz` file; params as float32."""
  with np.load(path, allow_pickle=False) as z:
    meta = json.loads(str(z[_META]))
    flat = {k: z[k].astype(np.float32) for k in z.files if k != _META}
  model = learned.build(meta["architecture"], num_filters=meta["num_filters"],
                        num_latent=meta["num_latent"], gdn=meta["gdn"])
  return model, flax.traverse_util.unflatten_dict(flat, sep="/"), meta


def load(name: str) -> tuple[nn.Module, dict, dict]:
  """A shipped model by name: `(model, params, metadata)`.

  Raises:
    ValueError: unknown name (the message lists the shipped ones).
  """
  if name not in list_models():
    raise ValueError(f"unknown model {name!r}; shipped models: {', '.join(list_models())}")
  return load_file(WEIGHTS_DIR / f"{name}.npz")


def load_checkpoint(workdir: str | pathlib.Path, *, step: int | None = None
                    ) -> tuple[nn.Module, dict, dict]:
  """`(model, params, codec config)` of a checkpoint of a training run directory.

  Args:
    workdir: a `jaxcomp.main` run directory.
    step: the checkpoint's step; None for the latest.

  Raises:
    FileNotFoundError: no `config.json`, no checkpoint, or no checkpoint at `step`.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top  (slow import, rarely used)

  workdir = pathlib.Path(workdir)
  config_file = workdir / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{workdir} is not a jaxcomp run directory (no config.json)")
  codec = json.loads(config_file.read_text())["codec"]
  model = learned.from_config(codec)
  manager = ocp.CheckpointManager((workdir / "checkpoints").resolve())
  steps = manager.all_steps()
  if not steps or (step is not None and step not in steps):
    manager.close()
    raise FileNotFoundError(f"no checkpoint{'' if step is None else f' at step {step}'} in "
                            f"{workdir / 'checkpoints'} (steps: {sorted(steps)})")
  step = max(steps) if step is None else step
  state = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  flat = flax.traverse_util.flatten_dict(state["params"])
  params = flax.traverse_util.unflatten_dict({k: np.asarray(v, np.float32)
                                              for k, v in flat.items()})
  return model, params, {**codec, "step": int(step)}
