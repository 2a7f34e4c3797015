"""The classifier registry: `MODELS.get(name)(num_classes=..., dtype=...)`."""

from jaxcomp.registry import Registry

MODELS = Registry("model")
