"""Classifier zoo. `get_model(name, num_classes=...)` builds a registered model."""
