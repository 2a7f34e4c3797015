"""Entry point: `python -m jaxcomp.main --config=configs/<name>.py[:args] --workdir=DIR`.

Every config field can be overridden on the command line
(`--config.train.batch_size=256`). The config is validated before anything
runs; an unknown key or an impossible value stops here with its name.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxcomp import config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/jpeg_dl.py:variant=sample.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect of a preempted job


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    config = config_lib.validate(_CONFIG.value)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if config.mode not in config_lib.TRAINER_MODES:
    from jaxcomp import evaluators  # pylint: disable=g-import-not-at-top
    try:
      evaluators.EVALUATORS.get(config.mode)(config, _WORKDIR.value)
    except (config_lib.ConfigError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    return 0
  from jaxcomp import train  # pylint: disable=g-import-not-at-top  (jax after flags)
  summary = train.train_and_evaluate(config, _WORKDIR.value)
  if summary.get("preempted"):
    print(f"preempted: checkpoint saved at step {summary['final_step']}", file=sys.stderr)
    return EXIT_PREEMPTED
  if "eval" in summary:
    print("eval: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in summary["eval"].items()))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
