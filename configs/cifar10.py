"""A zoo classifier on CIFAR-10 (JPEG q75): the foundation baseline.

  python -m jaxcomp.main --config=configs/cifar10.py --workdir=/tmp/cifar10
  python -m jaxcomp.main --config=configs/cifar10.py:variant=full,epochs=30 --workdir=/tmp/c10

Variants (`variant=`): "sample" (default; the 10,000 / 2,000-image sample that
ships inside the package, so this runs on a fresh clone without network),
"full" (all 50,000 / 10,000 images from ../shared/data/cifar10_jpeg75.zip, or
`--config.data.path=`), "tfds" (tfds `cifar10`, `--config.data.data_dir=`).
`runlocal=True` shrinks the run to a few steps for a smoke test.
"""

from jaxcomp import config_lib

_DATASETS = {"sample": "cifar10_sample", "full": "cifar10_jpeg75", "tfds": "tfds:cifar10"}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="sample", model="resnet20", epochs=10.0,
                           batch_size=128, runlocal=False)
  if a.variant not in _DATASETS:
    raise config_lib.ConfigError(f"variant={a.variant!r} is not one of {sorted(_DATASETS)}")
  c = config_lib.base_config()
  c.data.name = _DATASETS[a.variant]
  c.model.name = a.model
  c.train.batch_size = a.batch_size
  c.train.epochs = a.epochs
  c.train.log_every_steps = 50
  c.optim = config_lib.optimizer_config(name="momentum", learning_rate=0.1, momentum=0.9,
                                        weight_decay=5e-4, schedule="cosine",
                                        warmup_epochs=0.5)
  if a.runlocal:
    config_lib.shrink_for_smoke_test(c)
  return c
