"""The shipped MS-ROI network: weights I/O, BatchNorm folding, the pretrained loader.

The network itself (`MSROINet`, thesis papers/001 Ch. 2.3, Eq. 2.4-2.6) lives in the
classifier zoo, `jaxcomp.models.msroinet` (registered "msroinet"); it is re-exported
here. Weights are saved as a `.npz` (parameters under their '/'-joined paths plus a
JSON `__meta__`), the format of `jaxcomp.codecs.zoo`.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from jaxcomp.models.msroinet import MSROINet

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = "msroi-cifar10-composites"
_META = "__meta__"


def from_variables(variables: Any) -> MSROINet:
  """The `MSROINet` whose parameters `variables` holds (read from their shapes).

  Raises:
    ValueError: the tree is not an MS-ROI network's.
  """
  params = variables["params"] if "params" in variables else variables
  try:
    widths, block = [], 1
    while f"conv{block}_1" in params:
      widths.append(int(params[f"conv{block}_2"]["kernel"].shape[-1]))
      block += 1
    num_classes, class_features = (int(d) for d in params["class_weights"].shape)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"not the variables of an MS-ROI network ({e!r})") from None
  if not widths:
    raise ValueError("not the variables of an MS-ROI network: no block conv1_1")
  return MSROINet(num_classes=num_classes, widths=tuple(widths), class_features=class_features,
                  batch_norm="conv1_1_bn" in params)


def fold_batch_norm(variables: Any, *, epsilon: float = 1e-5) -> dict:
  """The variables of the same network at inference without BatchNorm.

  `bn(conv(x)) = conv'(x)` with `kernel' = kernel * s`, `bias' = (bias - mean) * s
  + beta`, `s = gamma / sqrt(var + epsilon)` per output channel (running statistics).

  Args:
    variables: {"params", "batch_stats"} of an `MSROINet(batch_norm=True)`.
    epsilon: the BatchNorm's epsilon (`common.batch_norm`: 1e-5).

  Returns:
    {"params"} of `MSROINet(batch_norm=False)` with the same inference outputs.
  """
  params = dict(flax.core.unfreeze(variables["params"]))
  stats = variables["batch_stats"]
  for name in [n for n in params if n.endswith("_bn")]:
    bn, conv = params.pop(name), name[:-3]
    s = bn["scale"] / jnp.sqrt(stats[name]["var"] + epsilon)
    params[conv] = {"kernel": params[conv]["kernel"] * s,
                    "bias": (params[conv]["bias"] - stats[name]["mean"]) * s + bn["bias"]}
  return {"params": params}


def save_weights(path: str | pathlib.Path, variables: Any, *, dtype: str = "float16",
                 **metadata: Any) -> None:
  """Writes `variables` (with JSON-serialisable `metadata`) as a weights `.npz`."""
  params = variables["params"] if "params" in variables else variables
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  arrays = {k: np.asarray(v).astype(dtype) for k, v in flat.items()}
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays, **{_META: np.asarray(json.dumps(metadata, sort_keys=True))})


def load_weights(path: str | pathlib.Path) -> tuple[dict, dict]:
  """`(variables, metadata)` from a weights `.npz`; parameters as float32 numpy arrays."""
  with np.load(path, allow_pickle=False) as z:
    meta = json.loads(str(z[_META]))
    flat = {k: z[k].astype(np.float32) for k in z.files if k != _META}
  return {"params": flax.traverse_util.unflatten_dict(flat, sep="/")}, meta


def list_weights() -> list[str]:
  """Names of the shipped weights, sorted."""
  return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


@functools.lru_cache(maxsize=4)
def pretrained(name: str = DEFAULT_WEIGHTS) -> tuple[MSROINet, dict, dict]:
  """The shipped network `name`: `(model, variables, metadata)` (cached).

  Raises:
    ValueError: unknown name (the message lists the shipped ones).
  """
  if name not in list_weights():
    raise ValueError(f"unknown MS-ROI weights {name!r}; shipped: {', '.join(list_weights())}")
  variables, meta = load_weights(WEIGHTS_DIR / f"{name}.npz")
  return from_variables(variables), variables, meta
