"""The configuration schema shared by every experiment, and its validation.

Every `configs/*.py` starts from `base_config()` and overrides fields; it never
adds top-level keys, so a misspelt key (on the command line or in a config file)
fails at start-up with a message naming it. `validate` then checks values.

Config files take an argument string in big_vision style:
`--config=configs/jpeg_dl.py:variant=resnet32,runlocal=True`, parsed by `parse_arg`.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import ml_collections

from jaxcomp import registry

ConfigDict = ml_collections.ConfigDict


def jpeg_layer_config() -> ConfigDict:
  """Defaults of the JPEG-DL layer (../shared/JPEG_DL.md)."""
  return ConfigDict(dict(
      rounds=1,                 # cascaded quantize/dequantize stages, own tables each
      init="quality",           # "quality" | "sensitivity" | "lsq"
      quality=50,               # JPEG quality for init="quality"
      quality_divisor=1.0,      # init table = standard table / divisor
      sensitivity_checkpoint="",  # pretrained workdir for init="sensitivity"
      sensitivity_images=10000,
      q_max=10.0,               # largest luma step after sensitivity init
      q_min=1e-5,               # step clamp applied before every forward pass
      alpha=5.0,                # soft-quantizer hardness
      alpha_mode="fixed",       # "fixed" | "trainable" | "hardness_matching"
      hardness=2.0,             # for alpha_mode="hardness_matching": alpha = hardness / q**2
      num_candidates=5,         # L
      # b: index window [-2**(b-1)+1, 2**(b-1)-1] (the authors'), or "auto": per
      # frequency from the coefficient's real range / step, so nothing ever clips.
      bits=ml_collections.FieldReference(8, field_type=object),
      lsq_grad_scale=False,     # scale the tables' gradients by 1/sqrt(N * Qp) (LSQ, ImageNet)
      sensitivity_bn="train",   # BatchNorm of the sensitivity pass: "train" (the authors') | "eval"
      step_floor="none",        # after init: "none" | "no_clip" (steps >= B / (2**(b-1) - 1))
  ))


def repr_config() -> ConfigDict:
  """Defaults of RePr (`task="repr"`, `jaxcomp.tasks.repr_task`): the thesis's Algorithm 3
  (Ch. 5; SPEC Sec. 10: S1 = 20, S2 = 10, p = 30 %, N = 3, inter-filter orthogonality)."""
  return ConfigDict(dict(
      rounds=3,                 # N: drop / re-introduce rounds; 0 -> standard training
      s1_epochs=20.0,           # S1: full-network training before each drop
      s2_epochs=10.0,           # S2: sub-network training before the re-introduction
      s1_steps=0,               # > 0: S1 in optimizer steps (instead of s1_epochs)
      s2_steps=0,               # > 0: S2 in optimizer steps
      fraction=0.3,             # p: share of the ranked filters dropped, one global ranking
      metric="ortho",           # ranking (RANKINGS): "ortho" | "weight_norm" | "random" | ...
      exclude_first=False,      # never drop the conv that reads the image
      max_fraction_per_layer=1.0,  # at most this share of a layer's filters (1.0: no cap)
      reinit="thesis",          # "thesis" (null space of the kept filters) | "official"
      rank_batches=4,           # training batches for data-driven rankings (gradient, ...)
      ortho_loss_weight=0.0,    # lambda of the orthogonality loss (thesis: 0.01); 0 -> off
      teacher_checkpoint="",    # workdir of a trained classifier -> knowledge distillation
      kd_weight=0.9,            # a in (1 - a) CE + a T^2 KL(teacher || student)
      kd_temperature=4.0,       # T
  ))


def hrs_config() -> ConfigDict:
  """Defaults of the Highest Rank Selector experiments (paper 003, SPEC Sec. 5; configs/hrs.py)."""
  return ConfigDict(dict(
      checkpoint="",             # workdir of a trained classification run (required)
      # JPEG qualities of the versions after the original: 1..100, strictly decreasing.
      qualities=(100, 90, 80, 70, 60, 50, 40, 30, 20, 10),
      fusion="weighted",         # 11-input network: "weighted" (softmax weights) | "concat"
      batch_size=500,            # selection report: images per chunk and per classifier call
  ))


def compressed_domain_config() -> ConfigDict:
  """Defaults of classification in the compressed domain (`task="compressed_domain"`,
  `jaxcomp.tasks.compressed_domain`; SPEC Sec. 6, configs/compressed_domain.py)."""
  return ConfigDict(dict(
      codec="hyperprior-q3",     # a shipped hyperprior, a weights .npz or a rate_distortion workdir
      input="latents",           # "latents" (y-hat, sigma-hat) | "decoded" | "pixels" (baselines)
      encoder="frozen",          # latents: "frozen" (cached; freeze ^codec/) | "joint" (fine-tuned)
      upsample=4,                # image side x this before coding (CIFAR 32 -> 128: 8x8 latents)
      rate_weight=0.0,           # joint loss: CE + rate_weight * bpp(coded) + distortion_weight * D
      distortion_weight=0.0,     # D: the codec's training distortion term (e.g. 255^2 MSE)
      quantization="ste",        # the codec's training proxy in joint mode: "ste" | "noise"
      crop=8,                    # aligned crop of y-hat and sigma-hat (centred in evaluation)
      pad=1,                     # zeros around the latents before the training crop
      flip=True,                 # aligned horizontal flips in training
      resize=0,                  # resize the latents to this side first (report 004: 32); 0 -> no
      width=1.0,                 # cResNet width multiplier (Table 2 widths x this)
      depth=1.0,                 # cResNet blocks-per-stage multiplier ([4, 6, 3] x this)
      eval_psnr=False,           # joint mode: also decode in evaluation and report PSNR
      init_from="",              # workdir of a compressed_domain run: start from its classifier
  ))


def base_config() -> ConfigDict:
  """All fields any experiment may set, with their defaults."""
  c = ConfigDict()
  c.seed = 0
  # Host memory: make glibc keep freed blocks for reuse instead of unmapping them, so
  # XLA:CPU's temporaries are not page-faulted in anew every step (jaxcomp.cpu_allocator).
  c.keep_freed_memory = True
  # XLA:CPU: convolutions by Eigen instead of YNNPACK, 1.07-1.46x faster training and
  # attacks on a CPU (jaxcomp.cpu_compiler_flags; set before JAX starts, process-wide).
  c.eigen_cpu_convolutions = True
  c.mode = "train_and_evaluate"  # "train_and_evaluate" | "train" | "evaluate" | an evaluator
  c.task = "classification"      # a registered task: "classification" | "rate_distortion" | ...

  c.data = ConfigDict(dict(
      name="cifar10_sample",     # a registered dataset (see jaxcomp.data)
      path="",                   # local file/folder, if the dataset reads one
      data_dir="",               # tfds data_dir (e.g. a GCS bucket)
      cache_dir="",              # decoded-array cache; "" -> ~/.cache/jaxcomp
      train_split="train",
      eval_split="test",
      augment="default",         # "default" (per dataset) | "cifar" | "inception" | "flip" | "none"
      image_size=0,              # 0 -> the dataset's native size
      num_train_examples=0,      # 0 -> all; >0 takes the first N (seeded subset)
      num_eval_examples=0,
  ))

  c.model = ConfigDict(dict(
      name="resnet20",
      dtype="float32",           # compute dtype: "float32" | "bfloat16"
      width=0,                   # model-specific width multiplier/base width; 0 -> default
      jpeg_layer=False,          # put a JPEG-DL layer in front of the classifier
      jpeg=jpeg_layer_config(),
  ))

  c.train = ConfigDict(dict(
      batch_size=128,            # global batch
      epochs=1.0,                # used when num_steps == 0
      num_steps=0,
      grad_accum_steps=1,
      label_smoothing=0.0,
      ema_decay=0.0,             # 0 -> no EMA
      log_every_steps=50,
      eval_every_steps=0,        # 0 -> once per epoch
      checkpoint_every_steps=0,  # 0 -> once per epoch
      keep_checkpoints=3,
      progress_bar=True,
      allow_config_change=False,  # resume even if model / optimizer / batch / seed changed
  ))
  c.eval = ConfigDict(dict(batch_size=256))

  c.optim = optimizer_config(name="momentum", learning_rate=0.1, weight_decay=5e-4)
  # Parameter groups (`jaxcomp.optim`): ordered (regex over the parameter path,
  # spec) pairs, the first match wins; spec = the name of an optimizer section
  # below, a dict of `optimizer_config` overrides, or "frozen". Unmatched
  # parameters use `optim`. E.g. JPEG-DL: (("^jpeg_layer/", "jpeg_optim"),).
  c.optim_groups = ()
  # Optimizer of JPEG-DL's tables (configs/jpeg_dl.py puts "^jpeg_layer/" in it).
  c.jpeg_optim = optimizer_config(name="adam", learning_rate=0.003, weight_decay=0.0,
                                  schedule="follow")
  # Optimizer of the learned codecs' entropy-bottleneck quantiles (auxiliary loss).
  c.aux_optim = optimizer_config(name="adam", learning_rate=1e-3, weight_decay=0.0,
                                 schedule="constant")

  # Learned-codec experiments (task="rate_distortion"; SPEC Sec. 3).
  c.codec = ConfigDict(dict(
      architecture="hyperprior",  # "factorized" | "hyperprior" | "bls2017"
      quality=3,                 # 1..8 preset: N, M and lambda of SPEC Sec. 3
      num_filters=0,             # N; 0 -> the quality preset
      num_latent=0,              # M; 0 -> the quality preset
      lmbda=0.0,                 # 0 -> the quality preset
      distortion="mse",          # "mse": R + lambda 255^2 MSE | "ms_ssim": R + lambda (1 - MS-SSIM)
      quantization="noise",      # training proxy: "noise" | "ste"
      gdn="classic",             # "classic" (sqrt) | "simplified" (TFC 2.x default)
      crop=256,                  # training crop size
      eval_path="",              # folder of eval PNGs; "" -> Kodak (shared data or packaged sample)
  ))

  # RePr (task="repr"; configs/repr.py).
  c.repr = repr_config()

  # The Highest Rank Selector (mode="selection", task="multi_version"; configs/hrs.py).
  c.hrs = hrs_config()

  # Classification in the compressed domain (task="compressed_domain"; SPEC Sec. 6).
  c.compressed_domain = compressed_domain_config()

  c.parallel = ConfigDict(dict(
      model_axis=1,              # size of the second mesh axis ("model")
      shard_params_min_size=2**20,  # params with more elements shard on "model"
  ))

  # Adversarial evaluation of trained runs (mode="robustness"; configs/adversarial.py).
  c.robustness = ConfigDict(dict(
      checkpoints="",            # trained workdirs, separated by "," or ";" (globs allowed)
      report="table",            # "table" | "ablation" | "jpeg_dl" (evaluators.adversarial)
      num_examples=1000,         # test images evaluated (0 -> the whole split)
      only_correct=True,         # draw them from those the model classifies correctly (thesis)
      batch_size=500,
      adaptive=True,             # BPDA + EOT column beside every defended cell
      adaptive_attacks=(),       # attack names that get it; () -> every attack
      eot_samples=8,             # EOT draws for randomised defenses (deterministic ones: 1)
      eps=(),                    # report="jpeg_dl": the L-inf budgets swept
      attacks=ConfigDict(),      # name -> {method, **kwargs of jaxcomp.attacks.<method>}
      defenses=ConfigDict(),     # name -> {stages: "pd+wd", group, votes, **stage kwargs}
  ))
  return c


def shrink_for_smoke_test(c: ConfigDict) -> ConfigDict:
  """The `runlocal=True` setting of every config: 4 steps of batch 32 on 256 images."""
  c.train.num_steps = 4
  c.train.batch_size = 32
  c.train.log_every_steps = 2
  c.train.checkpoint_every_steps = 2
  c.data.num_train_examples = 256
  c.data.num_eval_examples = 256
  c.eval.batch_size = 64
  return c


def optimizer_config(**overrides: Any) -> ConfigDict:
  """One optimizer with its learning-rate schedule."""
  c = ConfigDict(dict(
      name="momentum",           # "sgd" | "momentum" | "nesterov" | "adam" | "adamw"
      learning_rate=0.1,
      momentum=0.9,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,          # L2 added to gradients (sgd/momentum) or decoupled (adamw)
      grad_clip_norm=0.0,        # 0 -> off
      schedule="cosine",         # "constant" | "step" | "cosine" | "cyclic" | "follow"
      warmup_epochs=0.0,
      decay_epochs=(),           # step schedule: epochs at which lr *= decay_factor
      decay_factor=0.1,
      cycle_epochs=0.0,          # cyclic (triangular) schedule period
  ))
  c.update(overrides)
  return c


# Config keys whose value is a registered name: key -> registry kind
# (`jaxcomp.registry.by_kind`). The names themselves live only in the registries.
_REGISTERED = {
    "task": "task",
    "data.name": "dataset",
    "data.augment": "augmentation",
    "model.name": "model",
    "model.dtype": "dtype",
    "model.jpeg.init": "JPEG table init",
    "model.jpeg.alpha_mode": "JPEG-DL alpha mode",
    "model.jpeg.sensitivity_bn": "BatchNorm mode",
    "model.jpeg.step_floor": "JPEG step floor",
    "codec.architecture": "codec architecture",
    "codec.distortion": "distortion",
    "codec.quantization": "latent quantization mode",
    "codec.gdn": "GDN form",
    "robustness.report": "robustness report",
    "repr.metric": "RePr ranking",
    "repr.reinit": "RePr re-init",
}
# The modes the trainer runs itself; any other mode names a registered evaluator.
TRAINER_MODES = ("train_and_evaluate", "train", "evaluate")
# Extra values a key accepts besides the registered names.
_ALSO = {"data.augment": ("default",)}

_POSITIVE = ("robustness.batch_size", "hrs.batch_size", "train.batch_size", "eval.batch_size",
             "train.grad_accum_steps", "train.keep_checkpoints", "optim.learning_rate",
             "parallel.model_axis",
             "model.jpeg.rounds", "model.jpeg.num_candidates", "model.jpeg.q_max",
             "model.jpeg.q_min", "model.jpeg.alpha", "repr.fraction",
             "repr.max_fraction_per_layer", "repr.rank_batches", "repr.kd_temperature",
             "compressed_domain.upsample", "compressed_domain.crop", "compressed_domain.width",
             "compressed_domain.depth")
_NON_NEGATIVE = ("robustness.num_examples", "robustness.eot_samples", "train.epochs",
                 "train.num_steps", "train.label_smoothing", "train.ema_decay",
                 "data.num_train_examples", "data.num_eval_examples", "data.image_size",
                 "repr.rounds", "repr.s1_epochs", "repr.s2_epochs", "repr.s1_steps",
                 "repr.s2_steps", "repr.ortho_loss_weight", "repr.kd_weight",
                 "compressed_domain.rate_weight", "compressed_domain.distortion_weight",
                 "compressed_domain.pad", "compressed_domain.resize")
_BELOW_ONE = ("train.ema_decay", "repr.fraction")
_AT_MOST_ONE = ("train.label_smoothing", "repr.max_fraction_per_layer", "repr.kd_weight")
# In every optimizer section (`optimizer_config()`); "optim.learning_rate" is > 0 above.
_OPTIMIZER_NON_NEGATIVE = ("learning_rate", "weight_decay", "grad_clip_norm", "warmup_epochs",
                           "cycle_epochs", "decay_factor", "momentum", "b1", "b2")
_OPTIMIZER_BELOW_ONE = ("momentum", "b1", "b2")


def _get(config: ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


# Sections whose keys are user-chosen names (checked by their consumer instead).
_FREE_FORM = ("robustness.attacks.", "robustness.defenses.")


def _schema_errors(ref: ConfigDict, cfg: ConfigDict, prefix: str = "") -> list[str]:
  errors = []
  if prefix in _FREE_FORM:
    return errors
  for key in cfg.keys():
    if key not in ref:
      errors.append(f"unknown config key {prefix + key!r}")
    elif isinstance(ref[key], ConfigDict) and isinstance(cfg[key], ConfigDict):
      errors += _schema_errors(ref[key], cfg[key], prefix + key + ".")
    elif isinstance(ref[key], ConfigDict) != isinstance(cfg[key], ConfigDict):
      errors.append(f"config key {prefix + key!r} must be "
                    f"{'a section' if isinstance(ref[key], ConfigDict) else 'a value'}")
  return errors


class ConfigError(ValueError):
  """A configuration that cannot run; the message names the key."""


def optimizer_sections(config: ConfigDict) -> list[str]:
  """Top-level sections built by `optimizer_config()` ("optim", "jpeg_optim", ...)."""
  keys = set(optimizer_config().keys())
  return [k for k in config.keys()
          if isinstance(config[k], ConfigDict) and set(config[k].keys()) == keys]


def _number_errors(key: str, value: Any, *, positive: bool = False, below_one: bool = False,
                   at_most_one: bool = False) -> list[str]:
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    return [f"{key} must be a number, got {value!r}"]
  if value != value or value in (float("inf"), float("-inf")):
    return [f"{key} must be finite, got {value!r}"]
  if positive and value <= 0:
    return [f"{key} must be > 0, got {value!r}"]
  if value < 0:
    return [f"{key} must be >= 0, got {value!r}"]
  if below_one and value >= 1:
    return [f"{key} must be < 1, got {value!r}"]
  if at_most_one and value > 1:
    return [f"{key} must be <= 1, got {value!r}"]
  return []


def _choice_errors(config: ConfigDict) -> list[str]:
  """Registered names: every `_REGISTERED` key, optimizers, schedules and the mode."""
  errors = []

  def check(key: str, value: Any, allowed: Any, extra: tuple = ()) -> None:
    if value in extra or (isinstance(value, str) and value in allowed):
      return
    names = list(extra) + list(allowed.names() if hasattr(allowed, "names") else allowed)
    errors.append(f"{key}={value!r} is not one of {tuple(names)}")

  for key, kind in _REGISTERED.items():
    try:
      value = _get(config, key)
    except (KeyError, AttributeError):
      continue
    check(key, value, registry.by_kind(kind), _ALSO.get(key, ()))
  for section in optimizer_sections(config):
    c = config[section]
    check(f"{section}.name", c.name, registry.by_kind("optimizer"))
    check(f"{section}.schedule", c.schedule, registry.by_kind("schedule"),
          () if section == "optim" else ("follow",))
  if "mode" in config:
    check("mode", config.mode, registry.by_kind("evaluator"), TRAINER_MODES)
  return errors


def _group_errors(config: ConfigDict) -> list[str]:
  errors = []
  sections = optimizer_sections(config)
  for i, pair in enumerate(config.get("optim_groups", ())):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str):
      errors.append(f"optim_groups[{i}] must be a (regex, spec) pair, got {pair!r}")
      continue
    try:
      re.compile(pair[0])
    except re.error as e:
      errors.append(f"optim_groups[{i}]: bad regex {pair[0]!r} ({e})")
    spec = pair[1]
    if isinstance(spec, str) and spec != "frozen" and spec not in sections:
      errors.append(f"optim_groups[{i}]: spec {spec!r} is neither 'frozen' nor an optimizer "
                    f"section ({', '.join(sections)})")
    elif not isinstance(spec, (str, dict, ConfigDict)):
      errors.append(f"optim_groups[{i}]: spec must be a section name, a dict or 'frozen'")
  return errors


def validate(config: ConfigDict, reference: ConfigDict | None = None) -> ConfigDict:
  """Checks keys against the schema, names against the registries, values against ranges.

  Args:
    config: the experiment config.
    reference: the schema (default `base_config()`).

  Returns:
    `config`, locked (no new keys can be added).

  Raises:
    ConfigError: naming every offending key.
  """
  reference = base_config() if reference is None else reference
  errors = _schema_errors(reference, config)
  errors += _choice_errors(config)
  checks = [(k, dict(positive=k in _POSITIVE, below_one=k in _BELOW_ONE,
                     at_most_one=k in _AT_MOST_ONE)) for k in _POSITIVE + _NON_NEGATIVE]
  for section in optimizer_sections(config):
    checks += [(f"{section}.{f}", dict(below_one=f in _OPTIMIZER_BELOW_ONE))
               for f in _OPTIMIZER_NON_NEGATIVE if f"{section}.{f}" not in _POSITIVE]
  for key, kind in checks:
    try:
      value = _get(config, key)
    except (KeyError, AttributeError):
      continue
    errors += _number_errors(key, value, **kind)
  errors += _group_errors(config)
  try:
    bits = _get(config, "model.jpeg.bits")
  except (KeyError, AttributeError):
    bits = "auto"
  if bits != "auto" and (not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 24):
    errors.append(f"model.jpeg.bits must be an integer in 2..24 or 'auto', got {bits!r}")
  if "train" in config and "epochs" in config.train and "num_steps" in config.train:
    if config.train.epochs == 0 and config.train.num_steps == 0:
      errors.append("train.epochs and train.num_steps are both 0: nothing to train")
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
  config.lock()
  return config


def parse_arg(arg: str | None, **defaults: Any) -> ConfigDict:
  """Parses "variant=resnet32,runlocal=True" into a ConfigDict of typed values.

  Each key must appear in `defaults` (whose values give the types); a bare
  word "x" means "variant=x" when `variant` is a default.
  """
  out = ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    if not item:
      continue
    if "=" not in item:
      if "variant" not in defaults:
        raise ConfigError(f"config argument {item!r} must be key=value")
      key, raw = "variant", item
    else:
      key, raw = item.split("=", 1)
    if key not in defaults:
      raise ConfigError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      if raw.lower() not in ("true", "false", "1", "0"):
        raise ConfigError(f"config argument {key}={raw!r} must be a boolean")
      value = raw.lower() in ("true", "1")
    elif kind is str:
      value = raw
    else:
      try:
        value = kind(ast.literal_eval(raw))
      except (ValueError, SyntaxError) as e:
        raise ConfigError(f"config argument {key}={raw!r} must be {kind.__name__}") from e
    out[key] = value
  return out
