"""Evaluation in one place: loading finished runs (`runs`), rate-distortion of codecs
(`rate_distortion`), robustness (`robustness`, the runner `adversarial`, its
Markdown `robustness_report`), JPEG-DL's learned tables as files (`learned_tables`).

`EVALUATORS` maps a `config.mode` to its runner; importing this package registers them.
"""

from jaxcomp.evaluators import adversarial  # noqa: F401  (registers "robustness")
from jaxcomp.evaluators import compressed_training, corruption_robustness  # noqa: F401
from jaxcomp.evaluators import selection  # noqa: F401  (registers "selection")
from jaxcomp.evaluators.registry import EVALUATORS

__all__ = ["EVALUATORS"]
