"""Training tasks: what a model computes, its loss, its data and its evaluation.

The one trainer (`jaxcomp.train`) runs any registered task (`TASKS`):
"classification" (`tasks/classification.py`) and "rate_distortion"
(`tasks/rate_distortion.py`). Importing this package registers them.
"""

from jaxcomp.tasks import classification, rate_distortion  # noqa: F401  (register the tasks)
from jaxcomp.tasks import multi_version  # noqa: F401
from jaxcomp.tasks import compressed_domain  # noqa: F401
from jaxcomp.tasks.base import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
