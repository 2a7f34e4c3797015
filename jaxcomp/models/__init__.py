"""Classifier zoo: every model registered by name in `MODELS`.

`MODELS.get(name)(num_classes, dtype=jnp.float32, **attributes)` returns a Flax
module; `module.apply(variables, x, train=False)` maps normalised NHWC images to
`(logits [B, K] float32, {"features": [B, h, w, C], "pre_logits": [B, D]})`
(see `jaxcomp.models.common`). Importing this package registers every model.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from jaxcomp.models import convnet, densenet, mobilenetv2, resnet, shufflenetv2  # noqa: F401
from jaxcomp.models import cresnet  # noqa: F401
from jaxcomp.models import msroinet, squeezenet, vgg  # noqa: F401
from jaxcomp.models.registry import MODELS


def get_model(name: str, *, num_classes: int, **kwargs: Any) -> Any:
  """`MODELS.get(name)(num_classes, **kwargs)`; unknown names list the known ones."""
  return MODELS.get(name)(num_classes, **kwargs)


def count_params(params: Any) -> int:
  """The number of scalars in a pytree of arrays (or `jax.ShapeDtypeStruct`s).

  Pass `variables["params"]`: BatchNorm scale and bias count, its running
  statistics (collection "batch_stats") do not, as in PyTorch's
  `sum(p.numel() for p in model.parameters())`.
  """
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
