"""The Highest Rank Selector and the 11-input network on a trained classifier (paper 003).

  python -m jaxcomp.main --config=configs/hrs.py:checkpoint=RUN --workdir=OUT
  python -m jaxcomp.main --config=configs/hrs.py:checkpoint=RUN,variant=train,epochs=1 \\
      --workdir=OUT

RUN is the workdir of any finished classification run (configs/cifar10.py,
configs/fashion_mnist.py, ...). Its `data` and `model` sections are copied
into this config; override them as usual (`--config.data.num_eval_examples=
1000` takes a fixed, seeded subset of the test split). SPEC Sec. 5,
docs/selection.md.

Variants (`variant=`):
  "report" (default): mode "selection" (`jaxcomp.evaluators.selection`): the
    eval split's originals and their Pillow JPEG versions at `hrs.qualities`,
    classified by RUN; top-1 / top-5 accuracy and compression ratio of every
    fixed version, of HRS and of the label-free selectors; writes
    selection.json, selection.md, selection.png and selection.npz to OUT.
  "train": task "multi_version": the 11-input network (RUN's classifier as a
    frozen trunk over the original and its versions, `hrs.fusion`, a new head),
    trained for `epochs` with Adam; its eval adds top-5.
`runlocal=True` shrinks either to a smoke run (64 test images; 4 steps).
"""

from jaxcomp import checkpoint
from jaxcomp import config_lib

_VARIANTS = ("report", "train")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="report", checkpoint="", fusion="weighted", epochs=1.0,
                           batch_size=128, runlocal=False)
  if a.variant not in _VARIANTS:
    raise config_lib.ConfigError(f"variant={a.variant!r} is not one of {_VARIANTS}")
  c = config_lib.base_config()
  c.hrs.checkpoint = a.checkpoint
  c.hrs.fusion = a.fusion
  if a.checkpoint:
    run = checkpoint.read_config(a.checkpoint)
    c.data.update(run["data"])
    c.model.update(run["model"])
  if a.variant == "report":
    c.mode = "selection"
    if a.runlocal:
      c.data.num_eval_examples = 64
      c.hrs.batch_size = 32
    return c
  c.task = "multi_version"
  c.train.epochs = a.epochs
  c.train.batch_size = a.batch_size
  c.train.log_every_steps = 20
  c.eval.batch_size = 250
  c.optim = config_lib.optimizer_config(name="adam", learning_rate=1e-3, weight_decay=0.0,
                                        schedule="cosine")
  c.optim_groups = (("^trunk/", "frozen"),)
  if a.runlocal:
    config_lib.shrink_for_smoke_test(c)
    c.data.num_eval_examples = 64
  return c
