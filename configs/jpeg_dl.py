"""JPEG-DL: a learnable soft-JPEG layer trained jointly with a classifier.

  python -m jaxcomp.main --config=configs/jpeg_dl.py --workdir=workdirs/jpeg_dl
  python -m jaxcomp.main --config=configs/jpeg_dl.py:variant=cifar100_resnet56,seed=1 --workdir=...
  python -m jaxcomp.main --config=configs/jpeg_dl.py:variant=cifar10,jpeg_layer=False --workdir=...

Arguments (`:key=value,...`): `variant` (below), `jpeg_layer` (False = the
baseline with the same recipe), `seed`, `epochs` (0 = the recipe's), `init`
("quality" | "sensitivity" | "lsq"; "" = the recipe's), `sensitivity_checkpoint`
(workdir of the baseline run whose gradients set the tables), `rounds`,
`runlocal` (a few steps, for smoke tests).

Variants:
* `sample` (default): ResNet-20 on the CIFAR-10 (JPEG q75) sample that ships in
  the package, 3 epochs: runs on a fresh clone, offline, on a CPU.
* `cifar10`, `fmnist`: the local real data of ../shared/data (CIFAR-10 (JPEG q75)
  with ResNet-20; Fashion-MNIST with the ConvNet C^3(32)).
* The article's settings (data from tfds, `--config.data.data_dir=`):
  `cifar100_{resnet32,resnet56,resnet110,vgg8,vgg13,mobilenetv2,shufflenetv2}`
  (CRD recipe: SGD lr 0.05 — 0.01 for MobileNetV2 / ShuffleNetV2 — momentum 0.9,
  wd 5e-4, batch 64, 240 epochs, x0.1 at 150 / 180 / 210; tables by sensitivity);
  `{flowers,dogs,birds,pets}_{preact_resnet18,densenet121}` (224x224; the article
  gives no recipe, we use CS-KD's for these datasets and backbones: SGD lr 0.1,
  wd 1e-4, batch 32, 200 epochs, x0.1 at 100 / 150);
  `imagenet_{squeezenet1_1,resnet18,resnet34}` (SGD lr 0.1, wd 1e-4, batch 256,
  90 epochs, x0.1 at 30 / 60; JPEG layer: LSQ init, b = 11, hardness matching
  0.7, SGD momentum lr 0.4 with LSQ gradient scale).

The sensitivity variants need `sensitivity_checkpoint` (or `init=quality`).
Initial tables without a pretrained model ("quality"): the IJG table at quality 50
divided by 12.1, so that the largest luma step is 10, the `q_max` of the
sensitivity recipe.
"""

from jaxcomp import config_lib

_CIFAR100_MODELS = ("resnet32", "resnet56", "resnet110", "vgg8", "vgg13", "mobilenetv2",
                    "shufflenetv2")
_FINE_GRAINED = {"flowers": "tfds:oxford_flowers102", "dogs": "tfds:stanford_dogs",
                 "birds": "tfds:caltech_birds2011", "pets": "tfds:oxford_iiit_pet"}
_IMAGENET_MODELS = ("squeezenet1_1", "resnet18", "resnet34")


def variants() -> list[str]:
  """Every variant name this file accepts."""
  return (["sample", "cifar10", "fmnist"]
          + [f"cifar100_{m}" for m in _CIFAR100_MODELS]
          + [f"{d}_{m}" for d in _FINE_GRAINED for m in ("preact_resnet18", "densenet121")]
          + [f"imagenet_{m}" for m in _IMAGENET_MODELS])


def _step_recipe(c, *, lr, momentum=0.9, wd, batch, epochs, decay_epochs):
  c.train.batch_size = batch
  c.train.epochs = epochs
  c.optim = config_lib.optimizer_config(name="momentum", learning_rate=lr, momentum=momentum,
                                        weight_decay=wd, schedule="step",
                                        decay_epochs=decay_epochs, decay_factor=0.1)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="sample", jpeg_layer=True, seed=0, epochs=0.0,
                           init="", sensitivity_checkpoint="", rounds=1, runlocal=False)
  if a.variant not in variants():
    raise config_lib.ConfigError(f"variant={a.variant!r} is not one of {variants()}")
  c = config_lib.base_config()
  c.seed = a.seed
  c.model.jpeg_layer = a.jpeg_layer
  # The tables learn with their own optimizer (`jpeg_optim`); the baseline has none.
  c.optim_groups = (("^jpeg_layer/", "jpeg_optim"),) if a.jpeg_layer else ()
  c.model.jpeg.rounds = a.rounds
  c.model.jpeg.quality = 50
  c.model.jpeg.quality_divisor = 12.1
  c.model.jpeg.q_max = 10.0
  init = "quality"
  v = a.variant
  if v in ("sample", "cifar10"):
    c.data.name = "cifar10_sample" if v == "sample" else "cifar10_jpeg75"
    c.model.name = "resnet20"
    c.train.batch_size = 128
    c.train.epochs = 3.0
    c.optim = config_lib.optimizer_config(name="momentum", learning_rate=0.1, weight_decay=5e-4,
                                          schedule="cosine", warmup_epochs=0.2)
  elif v == "fmnist":
    c.data.name = "fashion_mnist_idx"
    c.model.name = "convnet_c3_32"
    c.train.batch_size = 128
    c.train.epochs = 1.0
    # 0.05 diverged in the first 50 steps (the FC reads 25,088 features).
    c.optim = config_lib.optimizer_config(name="momentum", learning_rate=0.01, weight_decay=5e-4,
                                          schedule="cosine", warmup_epochs=0.2)
  elif v.startswith("cifar100_"):
    model = v[len("cifar100_"):]
    c.data.name = "tfds:cifar100"
    c.model.name = model
    _step_recipe(c, lr=0.01 if model in ("mobilenetv2", "shufflenetv2") else 0.05, wd=5e-4,
                 batch=64, epochs=240.0, decay_epochs=(150, 180, 210))
    c.train.log_every_steps = 200
    init = "sensitivity"
  elif v.split("_", 1)[0] in _FINE_GRAINED:
    dataset, model = v.split("_", 1)
    c.data.name = _FINE_GRAINED[dataset]
    c.data.image_size = 224
    c.model.name = model
    _step_recipe(c, lr=0.1, wd=1e-4, batch=32, epochs=200.0, decay_epochs=(100, 150))
    init = "sensitivity"
  else:  # ImageNet
    c.data.name = "tfds:imagenet2012"
    c.data.eval_split = "validation"
    c.data.image_size = 224
    c.model.name = v[len("imagenet_"):]
    _step_recipe(c, lr=0.1, wd=1e-4, batch=256, epochs=90.0, decay_epochs=(30, 60))
    c.train.log_every_steps = 500
    c.model.jpeg.bits = 11
    c.model.jpeg.alpha_mode = "hardness_matching"
    c.model.jpeg.hardness = 0.7
    c.model.jpeg.lsq_grad_scale = True
    c.jpeg_optim = config_lib.optimizer_config(name="momentum", learning_rate=0.4,
                                               momentum=0.9, weight_decay=0.0,
                                               schedule="follow")
    init = "lsq"
  c.model.jpeg.init = a.init or init
  c.model.jpeg.sensitivity_checkpoint = a.sensitivity_checkpoint
  if c.model.jpeg.init == "sensitivity" and not a.sensitivity_checkpoint and a.jpeg_layer:
    raise config_lib.ConfigError(
        f"variant={v} initialises the tables by sensitivity: pass "
        "sensitivity_checkpoint=<workdir of its baseline run (jpeg_layer=False)>, "
        "or init=quality")
  if a.epochs:
    c.train.epochs = a.epochs
  if a.runlocal:
    config_lib.shrink_for_smoke_test(c)
  return c
