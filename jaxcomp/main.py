"""Entry point: `python -m jaxcomp.main --config=configs/<name>.py[:args] --workdir=DIR`.

Every config field can be overridden on the command line
(`--config.train.batch_size=256`). The config is validated before anything
runs; an unknown key or an impossible value stops here with its name.

Errors print one line, `error: ...`, on stderr (`--debug` shows the traceback
instead) and exit with status 2 when the command line or the config is wrong:
bad flags, an unknown key, an invalid value, a path the config names (data,
checkpoints to evaluate) that does not exist, a workdir that is a file, a
resume that would change the model / optimizer / batch size / seed, or
mode=evaluate without a checkpoint; and with status 1 when the run fails (a
workdir or checkpoint directory that cannot be written, a failed checkpoint
save, checkpoints that cannot be restored, divergence). A preempted run exits 143.
"""

from __future__ import annotations

import sys
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxcomp import config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/jpeg_dl.py:variant=sample.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
_DEBUG = flags.DEFINE_bool("debug", False, "On an error, show the traceback instead of one line.")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect of a preempted job
EXIT_USAGE = 2        # the command line or the config is wrong
EXIT_FAILED = 1       # the run failed
# Errors that mean the command line or the config is wrong: an invalid config,
# a path it names (data, checkpoints to evaluate) that does not exist, a
# workdir that is a file.
USAGE_ERRORS = (config_lib.ConfigError, FileNotFoundError, NotADirectoryError)


# Exceptions whose message says it all; any other kind is shown with its type.
_PLAIN = (ValueError, OSError, KeyError, FloatingPointError)


def _one_line(e: BaseException) -> str:
  """The exception's message on one line ("invalid config: a; b" for a multi-line one)."""
  lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
  message = " ".join(lines[:1] + ["; ".join(lines[1:])]).strip()
  if not isinstance(e, _PLAIN) or not message:
    message = f"{type(e).__name__}: {message}" + ("" if isinstance(e, _PLAIN)
                                                  else " (--debug shows the traceback)")
  return message


def _fail(e: BaseException, status: int) -> int:
  print(f"error: {_one_line(e)}", file=sys.stderr)
  return status


def _unknown_override(argv: list[str]) -> str | None:
  """The first `--config.KEY=...` whose KEY is not in the config schema, if any."""
  schema = config_lib.base_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node = schema
    for i, part in enumerate(key.split(".")):
      if isinstance(node, config_lib.ConfigDict) and part in node:
        node = node[part]
        if isinstance(node, config_lib.ConfigDict) and not node.keys():
          break                    # a free-form section: its keys come from the config file
      else:
        return ".".join(key.split(".")[:i + 1])
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with one-line errors (exit 2) instead of tracebacks."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  (absl, ml_collections and the config file raise many)
    if "--debug" in argv:
      raise
    unknown = _unknown_override(argv[1:])
    if unknown is not None:
      print(f"error: unknown config key {unknown!r} (on the command line)", file=sys.stderr)
    else:
      print(f"error: {_one_line(e)}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
    return EXIT_USAGE
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    config = config_lib.validate(_CONFIG.value)
  except Exception as e:  # noqa: BLE001  (a config file that fails to load, or is invalid)
    if _DEBUG.value:
      raise
    return _fail(e, EXIT_USAGE)
  if config.keep_freed_memory:
    from jaxcomp import cpu_allocator  # pylint: disable=g-import-not-at-top
    cpu_allocator.keep_freed_memory()
  if config.eigen_cpu_convolutions:
    from jaxcomp import cpu_compiler_flags  # pylint: disable=g-import-not-at-top
    cpu_compiler_flags.use_eigen_convolutions()
  try:
    if config.mode not in config_lib.TRAINER_MODES:
      from jaxcomp import evaluators  # pylint: disable=g-import-not-at-top
      evaluators.EVALUATORS.get(config.mode)(config, _WORKDIR.value)
      return 0
    from jaxcomp import train  # pylint: disable=g-import-not-at-top  (jax after flags)
    summary = train.train_and_evaluate(config, _WORKDIR.value)
  except Exception as e:  # noqa: BLE001  (one line per error; --debug for the traceback)
    status = EXIT_USAGE if isinstance(e, USAGE_ERRORS) else EXIT_FAILED
    if _DEBUG.value:
      traceback.print_exc()
      return status
    return _fail(e, status)
  if summary.get("preempted"):
    print(f"preempted: checkpoint saved at step {summary['final_step']}", file=sys.stderr)
    return EXIT_PREEMPTED
  if "eval" in summary:
    print("eval: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in summary["eval"].items()))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
