"""Trained codec parameters: the models shipped in `jaxcomp/codecs/weights/` and user checkpoints.

A shipped model is one `.npz` file: every parameter under its '/'-joined path
(float32 or float16), plus `__meta__`, a JSON object with the `architecture`
(a registered codec, `learned.CODECS`), the codec's constructor fields
(`num_filters`, `num_latent`, `gdn`, ...) and how it was trained. `load(name)`
rebuilds the Flax module and the parameter tree with no network and no orbax;
`load_checkpoint(workdir)` reads a `jaxcomp.main` run directory (through
`jaxcomp.checkpoint.read_run`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np

from jaxcomp import checkpoint
from jaxcomp.codecs import learned

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
_META = "__meta__"


def list_models() -> list[str]:
  """Names of the shipped models (e.g. "factorized-q3"), sorted."""
  return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def save(path: str | pathlib.Path, model: nn.Module, params: Any, *,
         dtype: str = "float32", **metadata: Any) -> None:
  """Writes `params` of `model` (with `metadata`) as a weights `.npz` file."""
  fields = learned.fields_of(model)
  if "num_latent" in fields:
    fields["num_latent"] = fields["num_latent"] or model.num_filters
  meta = {"architecture": learned.architecture_of(model), **fields, **metadata}
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  arrays = {k: np.asarray(v).astype(dtype) for k, v in flat.items()}
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays, **{_META: np.asarray(json.dumps(meta, sort_keys=True))})


def load_file(path: str | pathlib.Path) -> tuple[nn.Module, dict, dict]:
  """`(model, params, metadata)` from a weights `.npz` file; params as float32."""
  with np.load(path, allow_pickle=False) as z:
    meta = json.loads(str(z[_META]))
    flat = {k: z[k].astype(np.float32) for k in z.files if k != _META}
  cls = learned.CODECS.get(meta["architecture"])
  model = learned.build(meta["architecture"], **{k: meta[k] for k in learned.fields_of(cls())})
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
  config, state, step = checkpoint.read_run(workdir, step=step)
  codec = config.get("codec")
  if not codec:
    raise FileNotFoundError(f"{workdir} is not a learned-codec run (no codec in its config)")
  model = learned.from_config(codec)
  flat = flax.traverse_util.flatten_dict(state["params"])
  x = jax.ShapeDtypeStruct((1, model.downsampling, model.downsampling, 3), jax.numpy.float32)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(x.shape),
                                               mode="dequantize"))["params"]
  expected = {k: v.shape for k, v in flax.traverse_util.flatten_dict(expected).items()}
  if expected != {k: tuple(np.shape(v)) for k, v in flat.items()}:
    raise ValueError(f"the checkpoint in {workdir} does not hold a {codec['architecture']} codec "
                     f"(N={model.num_filters}, M={model.num_latent}) as its config says "
                     "(is it a run of another task?)")
  params = flax.traverse_util.unflatten_dict({k: np.asarray(v, np.float32)
                                              for k, v in flat.items()})
  return model, params, {**codec, "step": step}
