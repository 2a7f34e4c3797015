"""The classifier registry (`MODELS.get(name)(num_classes=..., dtype=...)`) and compute dtypes."""

import jax.numpy as jnp

from jaxcomp.registry import Registry

MODELS = Registry("model")

# `config.model.dtype` -> the compute dtype of a zoo model.
DTYPES = Registry("dtype")
DTYPES.register("float32", jnp.float32)
DTYPES.register("bfloat16", jnp.bfloat16)
