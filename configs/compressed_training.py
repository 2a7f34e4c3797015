"""Training on compressed data; compression as augmentation; corruption robustness (papers/000).

  # a classifier on BLS-compressed CIFAR-10 (JPEG q75), tested on the original test set (Fig. 3.4)
  python -m jaxcomp.main --config=configs/compressed_training.py:codec=bls:0.012 \
      --workdir=runs/ct/bls0.012
  # trained and tested on JPEG q20 data, a reduced VGG11 (Fig. 3.6, Table 3.2)
  python -m jaxcomp.main --config=configs/compressed_training.py:codec=jpeg:20,test=compressed,\
model=thesis_vgg11_3 --workdir=runs/ct/jpeg20-vgg3
  # the augmentation baselines of Table 4.1 and the joint top-2 BLS set (Ch. 4)
  python -m jaxcomp.main --config=configs/compressed_training.py:codec=noise:0.05 --workdir=...
  python -m jaxcomp.main --config=configs/compressed_training.py:codec=bls:0.012+bls:0.1 \
      --workdir=...
  # the 32x32 BLS codec standing for the thesis's lambda 0.012 (Table 3.1), as shipped
  python -m jaxcomp.main --config=configs/compressed_training.py:experiment=codec,rate=0.012 \
      --workdir=runs/codecs/bls-0.012
  python -m jaxcomp.codecs export --checkpoint runs/codecs/bls-0.012 --training-command \
      "python -m jaxcomp.main --config=configs/compressed_training.py:experiment=codec,\
rate=0.012 --workdir=runs/codecs/bls-0.012" jaxcomp/codecs/weights/cifar10-bls-0.012.npz
  # accuracy on the 50 CIFAR-10-C style sets, BDA / BDAD / BDADS over the runs (Tables 4.2, 4.3)
  python -m jaxcomp.main --config=configs/compressed_training.py:experiment=robustness,\
checkpoints='runs/ct/*' --workdir=runs/ct-robustness
  # the results table (CSV + Markdown) and the figures of Ch. 3-4 over finished runs
  python -m jaxcomp.main --config=configs/compressed_training.py:experiment=report,\
checkpoints='runs/ct/*' --workdir=runs/ct-report

Arguments (`:key=value,...`):
  experiment   "train" (default) | "codec" | "robustness" | "report"
  source       the original data: any dataset source (default cifar10_jpeg75, the
               shared CIFAR-10 (JPEG q75); fashion_mnist_idx; tfds:cifar10;
               cifar10_sample ships with jaxcomp); variant=tinyimagenet sets the
               64x64 setting (below)
  codec        what replaces the training images: "none" (the originals), a codec spec
               (jpeg:<Q>, jpeg:<Q>:444, bls2017:<model>, factorized:<model>,
               hyperprior:<model>), "bls:<label>" for the shipped 32x32 BLS model
               standing for the thesis's lambda <label> (cifar10-bls-<label>),
               "noise:<sigma>" / "blur:<k>" (Table 4.1's baselines), or "a+b" for the
               union of two such training sets (the joint top-2 set: bls:0.012+bls:0.1)
  test         "original" (default: the test set is the source's) | "compressed"
               (the test set goes through the same codec; Fig. 3.6)
  model        a zoo classifier (default thesis_vgg11; thesis_vgg11_1..5, thesis_res18,
               thesis_res18_1..4: Tables 3.2, 3.3)
  epochs, batch_size, lr, train_examples, eval_examples (0: all), runlocal
  rate, steps  experiment=codec: the thesis lambda the codec stands for; its training
               steps (default BLS_RATES[rate][2]: 3000, 10000 from 0.012 up; tinyimagenet 3000)
  checkpoints  experiment=robustness / report: run workdirs (globs; ';' between them)

The classifier recipe is the thesis's (Sec. 3.2): SGD, learning rate 0.01 (constant),
momentum 0.9, weight decay 5e-4, 30 epochs, batch 128; augmentation after
compression: random crop (pad 4) + horizontal flip. Seeds: --config.seed=k.

Codecs (experiment=codec): bls2017 with N = M = 64 (the thesis does not give its N;
64 keeps 60,000 images codable in minutes on a CPU), trained on whole 32x32 images
of the source's training split (`codec.crop = 0`) with R + lambda 255^2 MSE, Adam
1e-3, batch 64, 3000 steps (10000 from the thesis's 0.012 up: `BLS_RATES`, as the shipped
models); for 32x32 images only
(every latent touches the border: on photo crops they reach ~13 dB). The model
cifar10-bls-<label> is named by the thesis lambda it stands for; its own lambda
(in its metadata) is BLS_RATES[label][1], chosen so that the payload rate on the
CIFAR-10 (JPEG q75) test images matches Table 3.1's CIFAR-10 BLS rate of the thesis
lambda it stands for (docs/compressed_training.md gives the rates reached).

variant=tinyimagenet: Tiny ImageNet is not in the tfds catalogue; the setting
(64x64 images, 200 classes, batch 200 for ResNet18 and 300 for VGG11, BMSHJ
hyperprior codecs) reads `source=` (default tfds:imagenet_resized/64x64, prepared
in data.data_dir; a prepared Tiny ImageNet as tfds or an image_folder works alike).
Its augmentation is a horizontal flip (the thesis adds random rotation, which
jaxcomp's pipeline does not have).
"""

from jaxcomp import config_lib

# Thesis lambda (Table 3.1's order) -> (its CIFAR-10 BLS payload bpp, our lambda, training
# steps). Our lambda and steps are measured to give that rate (within 5 %) for the shipped
# models (docs/compressed_training.md); for the others (not reachable in 3000 steps: the
# models saturate near 0.93 bpp) they are guesses, to be calibrated with a longer schedule.
BLS_RATES = {
    "0.001": (0.26, 0.00106, 3000),
    "0.003": (0.52, 0.00405, 3000),
    "0.005": (0.69, 0.0087, 3000),
    "0.012": (1.08, 0.0445, 10000),
    "0.033": (1.49, 0.12, 10000),
    "0.05": (1.63, 0.16, 10000),
    "0.1": (1.91, 0.27, 10000),
}
_TINY = {"source": "tfds:imagenet_resized/64x64", "batch": {"thesis_res18": 200}, "default": 300}


def bls_model(label: str) -> str:
  """The shipped codec standing for the thesis's BLS lambda `label`."""
  if label not in BLS_RATES:
    raise config_lib.ConfigError(f"bls:{label}: the thesis's lambdas are {sorted(BLS_RATES)}")
  return f"cifar10-bls-{label}"


def _spec(codec: str) -> tuple[str, str]:
  """A codec argument -> (derived-source family "compressed" | "corrupted", spec)."""
  kind, _, rest = codec.partition(":")
  if kind == "bls":
    return "compressed", f"bls2017:{bls_model(rest)}"
  if kind in ("noise", "blur"):
    return "corrupted", codec
  return "compressed", codec


def data_name(source: str, codec: str, test: str, train_examples: int = 0) -> str:
  """The dataset source of a (source, codec, test) setting (see the module docstring)."""
  if test not in ("original", "compressed"):
    raise config_lib.ConfigError(f"test={test!r} must be 'original' or 'compressed'")
  if codec == "none":
    return source
  parts = codec.split("+")
  if len(parts) > 1:
    if test != "original":
      raise config_lib.ConfigError("a union of training sets (codec=a+b) is tested on the "
                                   "original test set only")
    base = f"subset:{train_examples}:{source}" if train_examples else source
    return "union:" + "|".join(data_name(base, p, test) for p in parts)
  family, spec = _spec(codec)
  return f"{family}{'_train' if test == 'original' else ''}:{source}:{spec}"


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="cifar10", experiment="train", source="",
                           codec="none", test="original", model="thesis_vgg11", epochs=30.0,
                           batch_size=0, lr=0.01, train_examples=0, eval_examples=0,
                           rate="0.012", steps=0, checkpoints="", runlocal=False)
  if a.variant not in ("cifar10", "tinyimagenet"):
    raise config_lib.ConfigError(f"variant={a.variant!r} is not 'cifar10' or 'tinyimagenet'")
  tiny = a.variant == "tinyimagenet"
  source = a.source or (_TINY["source"] if tiny else "cifar10_jpeg75")
  c = config_lib.base_config()
  c.data.num_eval_examples = a.eval_examples
  if a.experiment == "codec":
    return _codec(c, a, source, tiny)
  if a.experiment in ("robustness", "report"):
    c.mode = "corruption_robustness" if a.experiment == "robustness" else "compressed_training"
    c.data.name = source
    c.robustness.checkpoints = a.checkpoints
    c.eval.batch_size = 500
    return c
  if a.experiment != "train":
    raise config_lib.ConfigError(f"experiment={a.experiment!r} is not one of train, codec, "
                                 "robustness, report")
  c.data.name = data_name(source, a.codec, a.test, a.train_examples)
  c.data.num_train_examples = 0 if "+" in a.codec else a.train_examples
  c.data.augment = "flip" if tiny else "cifar"
  c.model.name = a.model
  c.train.epochs = a.epochs
  c.train.batch_size = a.batch_size or (
      _TINY["batch"].get(a.model, _TINY["default"]) if tiny else 128)
  c.train.log_every_steps = 100
  c.optim = config_lib.optimizer_config(name="momentum", learning_rate=a.lr, momentum=0.9,
                                        weight_decay=5e-4, schedule="constant")
  if a.runlocal:
    config_lib.shrink_for_smoke_test(c)
    if "+" in a.codec:
      c.data.num_train_examples = 0
  return c


def _codec(c, a, source, tiny):
  """The rate-distortion run of one codec (module docstring)."""
  if tiny:
    architecture, lmbda, n, batch = "hyperprior", float(a.rate), 64, 16
    steps = a.steps or 3000
  else:
    bls_model(a.rate)
    architecture, lmbda, n, batch = "bls2017", BLS_RATES[a.rate][1], 64, 64
    steps = a.steps or BLS_RATES[a.rate][2]
  c.task = "rate_distortion"
  c.optim_groups = (("(^|/)quantiles$", "aux_optim"),)
  c.data.name = source
  c.data.augment = "flip"
  c.data.num_eval_examples = a.eval_examples or 1000
  c.codec.architecture = architecture
  c.codec.num_filters = c.codec.num_latent = n
  c.codec.lmbda = lmbda
  c.codec.crop = 0
  c.train.batch_size = batch
  c.train.num_steps = steps
  c.train.log_every_steps = 100
  c.train.eval_every_steps = steps
  c.train.checkpoint_every_steps = 500
  c.eval.batch_size = 500
  c.optim = config_lib.optimizer_config(name="adam", learning_rate=1e-3, schedule="constant",
                                        grad_clip_norm=1.0)
  if a.runlocal:
    c.codec.num_filters = c.codec.num_latent = 8
    c.train.num_steps = c.train.eval_every_steps = 2
    c.train.checkpoint_every_steps = 2
    c.train.batch_size = 8
    c.data.num_train_examples = 64
    c.data.num_eval_examples = 16
    c.eval.batch_size = 16
    c.train.progress_bar = False
  return c
