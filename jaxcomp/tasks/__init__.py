"""Training tasks: what a model computes, its loss, its data and its evaluation.

The one trainer (`jaxcomp.train`) runs any registered task (`TASKS`):
"classification" (`tasks/classification.py`), "rate_distortion"
(`tasks/rate_distortion.py`) and "repr" (`tasks/repr_task.py`, RePr's schedule).
Importing this package registers them.
"""

# Imported to register the tasks.
from jaxcomp.tasks import classification, rate_distortion, repr_task  # noqa: F401
from jaxcomp.tasks import multi_version  # noqa: F401
from jaxcomp.tasks import compressed_domain  # noqa: F401
from jaxcomp.tasks.base import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
