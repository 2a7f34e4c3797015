"""The configuration schema shared by every experiment, and its validation.

Every `configs/*.py` starts from `base_config()` and overrides fields; it never
adds top-level keys, so a misspelt key (on the command line or in a config file)
fails at start-up with a message naming it. `validate` then checks values.

Config files take an argument string in big_vision style:
`--config=configs/jpeg_dl.py:variant=resnet32,runlocal=True`, parsed by `parse_arg`.
"""

from __future__ import annotations

import ast
from typing import Any

import ml_collections

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
      bits=8,                   # b: index clamp [-2**(b-1)+1, 2**(b-1)-L]
  ))


def base_config() -> ConfigDict:
  """All fields any experiment may set, with their defaults."""
  c = ConfigDict()
  c.seed = 0
  c.mode = "train_and_evaluate"  # "train_and_evaluate" | "train" | "evaluate"
  c.task = "classification"      # "classification" | "rate_distortion"

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
  ))
  c.eval = ConfigDict(dict(batch_size=256))

  c.optim = optimizer_config(name="momentum", learning_rate=0.1, weight_decay=5e-4)
  # Optimizer of the JPEG-layer parameters (optax.multi_transform group "jpeg").
  c.jpeg_optim = optimizer_config(name="adam", learning_rate=0.003, weight_decay=0.0,
                                  schedule="follow")

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
      aux_learning_rate=1e-3,    # optimizer of the entropy-bottleneck quantiles
  ))

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
      lsq_grad_scale=False,      # scale gradients by 1/sqrt(N * Qp) (LSQ, ImageNet JPEG-DL)
  ))
  c.update(overrides)
  return c


_CHOICES = {
    "mode": ("train_and_evaluate", "train", "evaluate", "robustness"),
    "robustness.report": ("table", "ablation", "jpeg_dl"),
    "task": ("classification", "rate_distortion"),
    "codec.architecture": ("factorized", "hyperprior", "bls2017"),
    "codec.distortion": ("mse", "ms_ssim"),
    "codec.quantization": ("noise", "ste"),
    "codec.gdn": ("classic", "simplified"),
    "model.dtype": ("float32", "bfloat16"),
    "model.jpeg.init": ("quality", "sensitivity", "lsq"),
    "model.jpeg.alpha_mode": ("fixed", "trainable", "hardness_matching"),
    "data.augment": ("default", "cifar", "inception", "flip", "none"),
    "optim.name": ("sgd", "momentum", "nesterov", "adam", "adamw"),
    "optim.schedule": ("constant", "step", "cosine", "cyclic"),
    "jpeg_optim.name": ("sgd", "momentum", "nesterov", "adam", "adamw"),
    "jpeg_optim.schedule": ("constant", "step", "cosine", "cyclic", "follow"),
}
_POSITIVE = ("robustness.batch_size", "train.batch_size", "eval.batch_size",
             "train.grad_accum_steps", "train.keep_checkpoints", "optim.learning_rate",
             "parallel.model_axis",
             "model.jpeg.rounds", "model.jpeg.num_candidates", "model.jpeg.q_max",
             "model.jpeg.q_min", "model.jpeg.alpha")
_NON_NEGATIVE = ("robustness.num_examples", "robustness.eot_samples", "train.epochs",
                 "train.num_steps", "train.label_smoothing", "train.ema_decay",
                 "optim.weight_decay", "optim.warmup_epochs",
                 "jpeg_optim.learning_rate", "jpeg_optim.weight_decay",
                 "optim.grad_clip_norm", "data.num_train_examples",
                 "data.num_eval_examples", "data.image_size")


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


def validate(config: ConfigDict, reference: ConfigDict | None = None) -> ConfigDict:
  """Checks keys against the schema and values against their allowed ranges.

  Args:
    config: the experiment config.
    reference: the schema (default `base_config()`); configs of other tasks
      (rate-distortion) pass their own.

  Returns:
    `config`, locked (no new keys can be added).

  Raises:
    ConfigError: naming every offending key.
  """
  reference = base_config() if reference is None else reference
  errors = _schema_errors(reference, config)
  for key, allowed in _CHOICES.items():
    try:
      value = _get(config, key)
    except (KeyError, AttributeError):
      continue
    if value not in allowed:
      errors.append(f"{key}={value!r} is not one of {allowed}")
  for key in _POSITIVE + _NON_NEGATIVE:
    try:
      value = _get(config, key)
    except (KeyError, AttributeError):
      continue
    if not isinstance(value, (int, float)) or isinstance(value, bool):
      errors.append(f"{key} must be a number, got {value!r}")
    elif key in _POSITIVE and value <= 0:
      errors.append(f"{key} must be > 0, got {value!r}")
    elif key in _NON_NEGATIVE and value < 0:
      errors.append(f"{key} must be >= 0, got {value!r}")
  if "train" in config and "epochs" in config.train and "num_steps" in config.train:
    if config.train.epochs == 0 and config.train.num_steps == 0:
      errors.append("train.epochs and train.num_steps are both 0: nothing to train")
  if "train" in config and "ema_decay" in config.train and config.train.ema_decay >= 1:
    errors.append(f"train.ema_decay must be < 1, got {config.train.ema_decay}")
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
