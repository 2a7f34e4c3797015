"""A small CNN on Fashion-MNIST (lossless, 28x28 grey).

  python -m jaxcomp.main --config=configs/fashion_mnist.py --workdir=/tmp/fmnist

Variants: "local" (default; the IDX files in ../shared/data/fashion_mnist, or
`--config.data.path=`), "tfds" (tfds `fashion_mnist`). The model is the
vanilla ConvNet C^n(X) of the RePr chapter (`convnet`, n = depth, X = width).
"""

from jaxcomp import config_lib

_DATASETS = {"local": "fashion_mnist_idx", "tfds": "tfds:fashion_mnist"}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="local", model="convnet_c3_32", epochs=5.0,
                           batch_size=128, runlocal=False)
  if a.variant not in _DATASETS:
    raise config_lib.ConfigError(f"variant={a.variant!r} is not one of {sorted(_DATASETS)}")
  c = config_lib.base_config()
  c.data.name = _DATASETS[a.variant]
  c.model.name = a.model
  c.train.batch_size = a.batch_size
  c.train.epochs = a.epochs
  c.optim = config_lib.optimizer_config(name="momentum", learning_rate=0.01, momentum=0.9,
                                        weight_decay=5e-4, schedule="cosine")
  if a.runlocal:
    config_lib.shrink_for_smoke_test(c)
  return c
