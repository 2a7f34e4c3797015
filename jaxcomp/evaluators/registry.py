"""The evaluator registry: `config.mode` names an evaluator when it is not a trainer mode.

An evaluator is `run(config, workdir) -> report dict`, registered with
`@EVALUATORS.register("name")` and run by `python -m jaxcomp.main
--config=... --config.mode=name` (e.g. "robustness").
"""

from jaxcomp.registry import Registry

EVALUATORS = Registry("evaluator")
