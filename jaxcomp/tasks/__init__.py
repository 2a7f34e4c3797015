"""Training tasks: what a model computes, its loss, its data and its evaluation.

The one trainer (`jaxcomp.train`) runs any registered task: "classification"
(`tasks/classification.py`) and "rate_distortion" (`tasks/rate_distortion.py`).
"""

from jaxcomp.tasks.base import TASKS, Task, get_task  # noqa: F401
