"""Classification in the compressed domain: a cResNet on hyperprior latents (SPEC Sec. 6).

The classifier (`models.cresnet`) reads what a hyperprior stream carries,
y-hat and sigma-hat (`codecs.latents`), instead of decoded pixels (report
004; Deng & Karam 2021; Torfason et al. 2018). `config.compressed_domain`:

  * `input="latents"`, `encoder="frozen"`: the codec's latents of every image
    are computed once and cached (`cached_arrays`: the integer symbols and the
    estimated bits; sigma-hat is rebuilt from z's symbols by the
    hyper-synthesis at start-up); the codec's parameters ride along in the
    train state under "codec/" and must sit in a frozen optimizer group
    (`optim_groups = (("^codec/", "frozen"),)`, checked by `prepare`).
  * `input="latents"`, `encoder="joint"`: every step encodes the batch and the
    encoder learns with the classifier, loss
    `CE + rate_weight * bpp + distortion_weight * D(x_hat, x)` (a = b = 0
    allowed), bpp of the coded (upsampled) image and D the codec's training
    distortion term (`learned.DISTORTIONS`, e.g. 255^2 MSE), so that
    `rate_weight = 1, distortion_weight = lambda` adds the codec's own
    rate-distortion loss. The codec's quantization in training is
    `quantization` ("ste": rounded latents, straight-through gradients).
    Which codec parameters learn, and how fast, is `optim_groups` data.
  * `input="decoded"` / `"pixels"`: the pixel-domain baselines, the same
    network with one branch on the image rearranged 4x4 -> channels
    (`space_to_depth`), so that the trunk sees the latents' 8x8 grid: on the
    codec's reconstructions (decoded at the coded size, downsampled back) or
    on the dataset's own pixels.

Small images: the shipped hyperpriors downsample y by 16 (z by 64), so a
32x32 CIFAR image is first upsampled `upsample` times (bilinear, rounded to
uint8; 4: 128x128 coded, 8x8 latents). Augmentation: the same random crop and
flip of y-hat and sigma-hat (`cresnet.crop_flip`, one key; "pad" zeros, a
"crop" square, "resize" first if > 0); evaluation takes the centred crop.
Pixel inputs use the dataset's augmentation (CIFAR: pad 4, crop 32, flip:
the same geometry). Metrics: "bits" per image and "bpp" per pixel of the
dataset's image (bits / (H W)), both from the likelihoods.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pathlib
from typing import Any, Iterator

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp import checkpoint
from jaxcomp import data as data_lib
from jaxcomp import models as models_lib
from jaxcomp import optim
from jaxcomp import parallel
from jaxcomp.codecs import latents as latents_lib
from jaxcomp.codecs import learned, pretrained
from jaxcomp.data.cache import cached_arrays
from jaxcomp.data.dataset import ArraySource, ImageDataset
from jaxcomp.models import cresnet
from jaxcomp.models.registry import DTYPES
from jaxcomp.tasks.base import TASKS, Batch, Task, Variables
from jaxcomp.tasks.classification import cross_entropy

INPUTS = ("latents", "decoded", "pixels")
ENCODER_MODES = ("frozen", "joint")
QUANTIZATIONS = ("ste", "noise")
Y_STRIDE = 16                 # y-hat is 16x smaller than the coded image (Balle et al. 2018)
_CACHE_VERSION = "1"


def upsample(images: jax.Array, factor: int) -> jax.Array:
  """uint8 [B, H, W, C] -> uint8 [B, fH, fW, C]: bilinear (half-pixel centres), rounded."""
  if factor == 1:
    return images
  b, h, w, c = images.shape
  x = jax.image.resize(images.astype(jnp.float32), (b, h * factor, w * factor, c), "bilinear")
  return jnp.clip(jnp.round(x), 0, 255).astype(jnp.uint8)


def downsample(images: jax.Array, factor: int) -> jax.Array:
  """float [B, fH, fW, C] in [0, 1] -> uint8 [B, H, W, C]: antialiased bilinear, rounded."""
  b, h, w, c = images.shape
  x = jax.image.resize(jnp.clip(images, 0.0, 1.0), (b, h // factor, w // factor, c), "bilinear",
                       antialias=True)
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def load_codec(spec: str) -> tuple[nn.Module, dict, str]:
  """`(model, params, distortion)` of a hyperprior: shipped name, weights `.npz` or codec run dir.

  Raises:
    ValueError: unknown name or missing file, or a codec that is not a hyperprior.
  """
  path = pathlib.Path(spec).expanduser()
  if spec in pretrained.list_models():
    model, params, meta = pretrained.load(spec)
  elif path.suffix == ".npz" and path.is_file():
    model, params, meta = pretrained.load_file(path)
  elif path.is_dir():
    model, params, meta = pretrained.load_checkpoint(path)
  else:
    raise ValueError(f"compressed_domain.codec={spec!r} is neither a shipped model "
                     f"({', '.join(pretrained.list_models())}), a weights .npz file nor a "
                     "codec training directory")
  latents_lib.check_hyperprior(model)
  return model, params, meta.get("distortion", "mse")


def _digest(*arrays: Any) -> str:
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


def codec_fingerprint(model: nn.Module, params: dict) -> str:
  """A digest of a codec's architecture fields and every parameter value."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  return f"{learned.architecture_of(model)}|{sorted(learned.fields_of(model).items())}|" + \
      _digest(*(np.asarray(flat[k], np.float32) for k in sorted(flat)))


def _bits(likelihoods: dict[str, jax.Array]) -> jax.Array:
  """Bits of each image, `-sum log2 p` over every latent (Balle et al. 2018, Eq. 2): [B]."""
  return sum(-jnp.sum(jnp.log2(v), axis=tuple(range(1, v.ndim))) for v in likelihoods.values())


@functools.partial(jax.jit, static_argnums=(0, 3))
def _encode(model: nn.Module, params: dict, images: jax.Array, factor: int) -> dict:
  out = latents_lib.forward(model, params, upsample(images, factor).astype(jnp.float32) / 255.0)
  y_symbols, z_symbols = latents_lib.symbols(model, params, out.y_hat, out.z_hat)
  return {"y_symbols": y_symbols, "z_symbols": z_symbols, "bits": _bits(out.likelihoods)}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _decode(model: nn.Module, params: dict, images: jax.Array, factor: int) -> dict:
  out = latents_lib.forward(model, params, upsample(images, factor).astype(jnp.float32) / 255.0)
  return {"images": downsample(out.x_hat, factor), "bits": _bits(out.likelihoods)}


def _batched(fn, arrays: tuple[np.ndarray, ...], batch_size: int) -> dict[str, np.ndarray]:
  """`fn(*batch) -> {name: [b, ...]}` over fixed-size (padded) batches of `arrays`, concatenated."""
  n = len(arrays[0])
  out: dict[str, np.ndarray] = {}
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)   # pad with the last example
    part = jax.device_get(fn(*(a[idx] for a in arrays)))
    for k, v in part.items():
      if k not in out:
        out[k] = np.empty((n, *v.shape[1:]), v.dtype)
      out[k][start:start + batch_size] = v[:min(batch_size, n - start)]
  return out


def _small_ints(x: np.ndarray, name: str) -> np.ndarray:
  if x.size and np.abs(x).max() > np.iinfo(np.int16).max:
    raise ValueError(f"{name} exceed the int16 range of the latent cache")
  return x.astype(np.int16)


def encode_dataset(model: nn.Module, params: dict, images: np.ndarray, *, upsample_factor: int,
                   batch_size: int) -> dict[str, np.ndarray]:
  """The codec's symbols and estimated bits of every image (what its streams would carry).

  Args:
    images: uint8 [N, H, W, 3]; `H * upsample_factor` and W likewise multiples
      of `model.downsampling`.

  Returns:
    "y_symbols" int16 [N, h, w, M], "z_symbols" int16 [N, h/4, w/4, N_z],
    "bits" float32 [N].
  """
  out = _batched(lambda x: _encode(model, params, x, upsample_factor), (images,), batch_size)
  return {"y_symbols": _small_ints(out["y_symbols"], "y symbols"),
          "z_symbols": _small_ints(out["z_symbols"], "z symbols"),
          "bits": out["bits"].astype(np.float32)}


def latent_maps(model: nn.Module, params: dict, y_symbols: np.ndarray, z_symbols: np.ndarray, *,
                batch_size: int) -> np.ndarray:
  """float32 [N, h, w, 2M]: y-hat then sigma-hat of cached symbols (`latents_from_symbols`)."""
  def fn(y, z):
    y_hat, sigma_hat = latents_lib.latents_from_symbols(model, params, y, z)
    return {"maps": jnp.concatenate([y_hat, sigma_hat], axis=-1)}
  return _batched(fn, (y_symbols, z_symbols), batch_size)["maps"]


@TASKS.register("compressed_domain")
class CompressedDomainTask(Task):
  """A cResNet on hyperprior latents, or a pixel baseline (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    super().__init__(config, mesh)
    cd = config.compressed_domain
    for key, value, allowed in (("input", cd.input, INPUTS), ("encoder", cd.encoder, ENCODER_MODES),
                                ("quantization", cd.quantization, QUANTIZATIONS)):
      if value not in allowed:
        raise ValueError(f"compressed_domain.{key}={value!r} is not one of {allowed}")
    parallel.check_batch_divisible(config.train.batch_size, mesh)
    parallel.check_batch_divisible(config.eval.batch_size, mesh)
    self.cd = cd
    self.joint = cd.input == "latents" and cd.encoder == "joint"
    self.codec, self.codec_params, self.distortion = load_codec(cd.codec)
    train_ds = data_lib.get_dataset(config.data, config.data.train_split)
    eval_ds = data_lib.get_dataset(config.data, config.data.eval_split)
    self.image_shape = train_ds.image_shape
    h, w, c = self.image_shape
    if c != 3 or (h * cd.upsample) % self.codec.downsampling or \
        (w * cd.upsample) % self.codec.downsampling:
      raise ValueError(f"{train_ds.name} images of {h}x{w}x{c} upsampled {cd.upsample}x are "
                       f"not RGB multiples of the codec's {self.codec.downsampling}: set "
                       "compressed_domain.upsample")
    self.grid = (h * cd.upsample // Y_STRIDE, w * cd.upsample // Y_STRIDE)
    self.num_classes = train_ds.num_classes
    self.mean, self.std = train_ds.mean, train_ds.std
    self.model = self._build_model()
    if cd.input == "latents":
      view = cd.resize or min(self.grid)
      if cd.crop < self.model.min_input_size:
        raise ValueError(f"compressed_domain.crop={cd.crop}: crops of the {view}x{view} latents "
                         f"are too small for the network, which downsamples by "
                         f"{self.model.min_input_size} (upsample more, or set resize)")
      if cd.crop > view:
        raise ValueError(f"compressed_domain.crop={cd.crop} exceeds the {view}x{view} latents "
                         "(the evaluation crop)")
    distortion = learned.DISTORTIONS.get(self.distortion)
    if self.joint and cd.distortion_weight > 0 and min(h, w) * cd.upsample < distortion.min_size:
      raise ValueError(f"the codec's distortion {self.distortion!r} needs coded images of at "
                       f"least {distortion.min_size} pixels a side, got {min(h, w) * cd.upsample}")
    if cd.input == "latents" and not self.joint:
      self.train_ds, self.train_bits = self._latent_dataset(train_ds)
      self.eval_ds, self.eval_bits = self._latent_dataset(eval_ds)
    elif cd.input == "decoded":
      self.train_ds, self.train_bits = self._decoded_dataset(train_ds)
      self.eval_ds, self.eval_bits = self._decoded_dataset(eval_ds)
    else:
      self.train_ds, self.eval_ds = train_ds, eval_ds
      self.train_bits = self.eval_bits = None
    self.steps_per_epoch = max(len(self.train_ds) // config.train.batch_size, 1)

  def _build_model(self) -> nn.Module:
    cd, c = self.cd, self.image_shape[-1]
    latent = self.cd.input == "latents"
    m = self.codec.num_latent
    try:
      return models_lib.MODELS.get(self.config.model.name)(
          self.num_classes, dtype=DTYPES.get(self.config.model.dtype),
          input_channels=(m, m) if latent else (c,), width=cd.width, depth=cd.depth,
          space_to_depth=1 if latent else self.image_shape[0] // self.grid[0])
    except TypeError:
      raise ValueError(f"model.name={self.config.model.name!r} is not a compressed-domain "
                       "network (cresnet39, cresnet39_coded)") from None

  # --- cached inputs ----------------------------------------------------------
  def _cache(self, ds: ImageDataset, kind: str, build) -> dict[str, np.ndarray]:
    images, labels = ds.read(np.arange(len(ds)))
    key = (f"{_CACHE_VERSION}|{kind}|{ds.name}|{ds.split}|up={self.cd.upsample}|"
           f"{codec_fingerprint(self.codec, self.codec_params)}|{_digest(images, labels)}")
    tag = f"compressed_domain-{kind}-{ds.name}-{ds.split}"

    def make() -> dict[str, np.ndarray]:
      logging.info("%s of %d %s/%s images with %s (cached for later runs)", kind, len(ds),
                   ds.name, ds.split, self.cd.codec)
      return {**build(images), "labels": labels}

    return cached_arrays(self.config.data.cache_dir, tag, key, make)

  def _latent_dataset(self, ds: ImageDataset) -> tuple[ImageDataset, np.ndarray]:
    """The dataset of latent maps (y-hat ++ sigma-hat, float32) and its bits per image."""
    batch = self.config.eval.batch_size
    cache = self._cache(ds, "latents", lambda images: encode_dataset(
        self.codec, self.codec_params, images, upsample_factor=self.cd.upsample,
        batch_size=batch))
    maps = latent_maps(self.codec, self.codec_params, cache["y_symbols"], cache["z_symbols"],
                       batch_size=batch)
    channels = maps.shape[-1]
    out = dataclasses.replace(
        ds, name=f"{ds.name}:latents", image_shape=maps.shape[1:], mean=(0.0,) * channels,
        std=(1.0,) * channels, default_augment="none", source=ArraySource(maps, cache["labels"]),
        indices=None)
    return out, np.asarray(cache["bits"])

  def _decoded_dataset(self, ds: ImageDataset) -> tuple[ImageDataset, np.ndarray]:
    """The codec's reconstructions at the dataset's size (uint8) and the bits per image."""
    f = self.cd.upsample
    cache = self._cache(ds, "decoded", lambda images: _batched(
        lambda x: _decode(self.codec, self.codec_params, x, f), (images,),
        self.config.eval.batch_size))
    return (dataclasses.replace(ds, name=f"{ds.name}:decoded",
                                source=ArraySource(cache["images"], cache["labels"]),
                                indices=None), np.asarray(cache["bits"]))

  # --- data -------------------------------------------------------------------
  def train_iterator(self, *, seed: int, start_step: int) -> Iterator[Batch]:
    augment = "none" if self.cd.input == "latents" else self.config.data.augment
    return data_lib.train_batches(
        self.train_ds, batch_size=self.config.train.batch_size, seed=seed,
        start_step=start_step, augment=augment, process_index=jax.process_index(),
        process_count=jax.process_count())

  # --- model ------------------------------------------------------------------
  def _classifier_input_shape(self) -> tuple[int, ...]:
    if self.cd.input == "latents":
      return (1, self.cd.crop, self.cd.crop, 2 * self.codec.num_latent)
    return (1, *self.image_shape)

  def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
    """The classifier's initialisation under "classifier"; the codec (latent inputs) under
    "codec", as zeros of its shapes until `prepare` loads the pretrained values."""
    del batch
    variables = flax.core.unfreeze(self.model.init(
        rng, jnp.zeros(self._classifier_input_shape(), jnp.float32), train=False))
    out: dict[str, Any] = {k: {"classifier": v} for k, v in variables.items()}
    if self.cd.input == "latents":
      out["params"]["codec"] = jax.tree.map(jnp.zeros_like, self.codec_params)
    return out

  def prepare(self, state: Any) -> Any:
    """At step 0: the pretrained codec (latent inputs) and, with `init_from`, the classifier
    of another run; and (latent inputs) a check of the codec's optimizer group.

    Raises:
      ValueError: `encoder="frozen"` with a codec parameter outside a frozen group,
        `encoder="joint"` with every codec parameter frozen, or an `init_from`
        run whose classifier differs from this one.
    """
    if self.cd.input == "latents":
      labels = set(jax.tree.leaves(optim.group_labels(state.params, self.config.optim_groups)
                                   ["codec"]))
      if not self.joint and labels != {optim.FROZEN}:
        raise ValueError("compressed_domain.encoder='frozen' trains on cached latents: "
                         "optim_groups must freeze every codec parameter, e.g. "
                         "(('^codec/', 'frozen'),)")
      if self.joint and labels == {optim.FROZEN}:
        raise ValueError("compressed_domain.encoder='joint' needs trainable codec parameters; "
                         "optim_groups freezes them all")
    if int(state.step) != 0:
      return state
    params, collections = dict(state.params), dict(state.collections)
    if self.cd.input == "latents":
      params["codec"] = jax.tree.map(lambda z, p: jnp.asarray(p, z.dtype), params["codec"],
                                     self.codec_params)
    if self.cd.init_from:
      saved = checkpoint.eval_variables(checkpoint.read_run(self.cd.init_from)[1])
      current = {"params": params["classifier"],
                 **{k: v["classifier"] for k, v in collections.items()}}
      loaded = {k: saved.get(k, {}).get("classifier") for k in current}
      shapes = lambda t: jax.tree.map(np.shape, t)
      if any(v is None for v in loaded.values()) or shapes(loaded) != shapes(current):
        raise ValueError(f"compressed_domain.init_from={self.cd.init_from!r} holds no classifier "
                         "of this architecture and input")
      params["classifier"] = jax.tree.map(jnp.asarray, loaded.pop("params"))
      collections = {k: {**v, "classifier": jax.tree.map(jnp.asarray, loaded[k])}
                     for k, v in collections.items()}
    return state.replace(params=params, collections=collections)

  def _inputs(self, params: dict, batch: Batch, key: jax.Array, *, train: bool
              ) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """Classifier inputs [B, h, w, C], per-example rate metrics, and the codec's loss terms."""
    cd = self.cd
    extra: dict[str, jax.Array] = {}
    penalty = jnp.zeros((), jnp.float32)
    if cd.input != "latents":
      return data_lib.normalize(batch["image"], self.mean, self.std), extra, penalty
    key_codec, key_aug = jax.random.split(key)
    if self.joint:
      coded = upsample(batch["image"], cd.upsample).astype(jnp.float32) / 255.0
      out = latents_lib.forward(self.codec, params["codec"], coded,
                                mode=cd.quantization if train else "dequantize", key=key_codec)
      maps = [out.y_hat, out.sigma_hat]
      extra["bits"] = _bits(out.likelihoods)
      bpp_coded = jnp.mean(extra["bits"]) / (coded.shape[1] * coded.shape[2])
      penalty = cd.rate_weight * bpp_coded
      if cd.distortion_weight > 0 or cd.eval_psnr:
        extra["mse"] = jnp.mean(jnp.square(jnp.clip(out.x_hat, 0.0, 1.0) - coded), axis=(1, 2, 3))
      if cd.distortion_weight > 0:
        term = learned.DISTORTIONS.get(self.distortion).term(out.x_hat, coded)
        penalty = penalty + cd.distortion_weight * term
    else:
      maps = jnp.split(batch["image"], 2, axis=-1)
    if train:
      maps = cresnet.crop_flip(maps, key_aug, size=cd.crop, pad=cd.pad, flip=cd.flip,
                                          resize=cd.resize)
    else:
      maps = cresnet.center_crop(maps, size=cd.crop, resize=cd.resize)
    return jnp.concatenate(maps, axis=-1), extra, penalty

  def _classify(self, variables: Variables, x: jax.Array, *, train: bool
                ) -> tuple[jax.Array, Variables]:
    cls_vars = {k: v["classifier"] for k, v in variables.items()}
    mutable = [k for k in cls_vars if k != "params"] if train else []
    if mutable:
      (logits, _), updates = self.model.apply(cls_vars, x, train=True, mutable=mutable)
      return logits, {k: {**variables[k], "classifier": v} for k, v in updates.items()}
    logits, _ = self.model.apply(cls_vars, x, train=train)
    return logits, {}

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    x, extra, penalty = self._inputs(variables["params"], batch, rng, train=train)
    logits, updates = self._classify(variables, x, train=train)
    ce = cross_entropy(logits, batch["label"], num_classes=self.num_classes,
                       label_smoothing=self.config.train.label_smoothing).mean()
    loss = ce + penalty
    scalars = {"loss": loss, "cross_entropy": ce,
               "accuracy": (jnp.argmax(logits, -1) == batch["label"]).mean()}
    if "bits" in extra:
      scalars["bpp"] = jnp.mean(extra["bits"]) / (self.image_shape[0] * self.image_shape[1])
    if "mse" in extra:
      scalars["psnr_coded"] = jnp.mean(-10.0 * jnp.log10(extra["mse"]))
    return loss, (scalars, updates)

  def apply_fn(self, variables: Variables, images: jax.Array) -> jax.Array:
    """Eval-mode logits of images [B, H, W, 3] in [0, 1] (quantized to 8 bits for the codec)."""
    batch = {"image": jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.uint8)}
    if self.cd.input == "latents" and not self.joint:   # the codec the cache was made with
      out = latents_lib.forward(self.codec, variables["params"]["codec"],
                                upsample(batch["image"], self.cd.upsample) / 255.0)
      batch = {"image": jnp.concatenate([out.y_hat, out.sigma_hat], axis=-1)}
    x, _, _ = self._inputs(variables["params"], batch, jax.random.key(0), train=False)
    return self._classify(variables, x, train=False)[0]

  # --- evaluation -------------------------------------------------------------
  @functools.cached_property
  def _eval_step(self):
    def step(variables, batch):
      x, extra, _ = self._inputs(variables["params"], batch, jax.random.key(0), train=False)
      logits, _ = self._classify(variables, x, train=False)
      mask = batch["mask"].astype(jnp.float32)
      ce = cross_entropy(logits, batch["label"], num_classes=self.num_classes)
      correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
      sums = {"loss_sum": (ce * mask).sum(), "correct": (correct * mask).sum(),
              "count": mask.sum()}
      if "bits" in extra:
        sums["bits_sum"] = (extra["bits"] * mask).sum()
      if "mse" in extra:
        sums["psnr_sum"] = (-10.0 * jnp.log10(extra["mse"]) * mask).sum()
      return sums
    return jax.jit(step)

  def evaluate(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Top-1 accuracy, mean cross-entropy and (codec inputs) bits / bpp over the eval split."""
    totals: dict[str, float] = {}
    for batch in data_lib.eval_batches(
        self.eval_ds, batch_size=self.config.eval.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count()):
      out = self._eval_step(variables, parallel.host_to_global(batch, mesh))
      for k, v in jax.device_get(out).items():
        totals[k] = totals.get(k, 0.0) + float(v)
    count = max(totals["count"], 1.0)
    result = {"accuracy": totals["correct"] / count, "loss": totals["loss_sum"] / count,
              "num_examples": int(totals["count"])}
    if self.eval_bits is not None:
      totals["bits_sum"] = float(np.sum(self.eval_bits, dtype=np.float64))
    if "bits_sum" in totals:
      result["bits"] = totals["bits_sum"] / count
      result["bpp"] = result["bits"] / (self.image_shape[0] * self.image_shape[1])
    if "psnr_sum" in totals:
      result["psnr_coded"] = totals["psnr_sum"] / count
    return result
