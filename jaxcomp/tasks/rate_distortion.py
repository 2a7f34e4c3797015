"""Rate-distortion training of learned codecs (SPEC Sec. 3; Ballé et al. 2018, Eq. 2).

Loss `L = R + lambda * 255^2 * MSE` (or `R + lambda * (1 - MS-SSIM)`: the
registered `learned.DISTORTIONS`), `R` in bits per pixel from the likelihoods of
the noisy (or straight-through rounded) latents, plus the entropy bottleneck's
auxiliary quantile loss, whose gradient reaches only the quantiles: the configs
put them in their own optimizer group (`("(^|/)quantiles$", "aux_optim")`, Adam).

Data: random `codec.crop` squares of the photos in `data.path` (default
`../shared/data/photos`); batch s depends on (seed, s) only. Evaluation: every
image of `codec.eval_path` (default Kodak) at full size, rate estimated from the
likelihoods of the rounded latents (`mode="dequantize"`).

With `codec.crop = 0` the codec trains on the whole images of the dataset source
`data.name` instead (e.g. CIFAR-10's 32x32 images for the compressed-training
thesis's BLS models), batched by `data.train_batches` with `data.augment`, and is
evaluated on `data.eval_split` (mean per-image bpp from the likelihoods, PSNR).
"""

from __future__ import annotations

import functools
from typing import Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp import data as data_lib
from jaxcomp import metrics
from jaxcomp import parallel
from jaxcomp.codecs import learned
from jaxcomp.data.local import find_data
from jaxcomp.tasks.base import TASKS, Batch, Task, Variables
from jaxcomp.tasks.classification import to_unit_float


def rd_lambda(codec: ml_collections.ConfigDict) -> float:
  """`codec.lmbda`, or the quality preset's lambda for `codec.distortion`."""
  return codec.lmbda or learned.lmbda(codec.quality, codec.distortion)


def random_crops(images: list[np.ndarray], *, crop: int, batch_size: int, seed: int,
                 step: int) -> np.ndarray:
  """`(batch_size, crop, crop, 3)` uint8 crops; a function of (seed, step) only."""
  rng = np.random.default_rng([seed, 2, step])
  which = rng.integers(0, len(images), batch_size)
  out = np.empty((batch_size, crop, crop, 3), np.uint8)
  for i, k in enumerate(which):
    h, w = images[k].shape[:2]
    top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    out[i] = images[k][top:top + crop, left:left + crop]
  return out


@TASKS.register("rate_distortion")
class RateDistortionTask(Task):
  """Trains `config.codec` on crops of `config.data.path` (see `tasks.base.Task`)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    super().__init__(config, mesh)
    codec = config.codec
    self.model = learned.from_config(codec)
    self.lmbda = rd_lambda(codec)
    parallel.check_batch_divisible(config.train.batch_size, mesh)
    self.train_ds = None
    if codec.crop == 0:
      self._init_dataset(config)
      return
    self._check_size(codec.crop)
    photos = find_data(config.data.path, "photos", "codec training photos")
    self.train_images = [im for im in data_lib.load_images(photos)
                         if min(im.shape[:2]) >= codec.crop]
    if not self.train_images:
      raise ValueError(f"no image in {photos} is at least {codec.crop} pixels a side")
    pixels = sum(im.shape[0] * im.shape[1] for im in self.train_images)
    self.steps_per_epoch = max(pixels // (codec.crop ** 2 * config.train.batch_size), 1)

  def _check_size(self, size: int) -> None:
    codec = self.config.codec
    if size % self.model.downsampling:
      raise ValueError(f"codec.crop={size} must be a multiple of "
                       f"{self.model.downsampling} for {codec.architecture}")
    min_size = learned.DISTORTIONS.get(codec.distortion).min_size
    if size < min_size:
      raise ValueError(f"codec.distortion={codec.distortion!r} needs images of at least "
                       f"{min_size} pixels, got {size}")

  def _init_dataset(self, config: ml_collections.ConfigDict) -> None:
    """`codec.crop = 0`: whole images of the dataset source `data.name`."""
    self.train_ds = data_lib.get_dataset(config.data, config.data.train_split)
    h, w, c = self.train_ds.image_shape
    if c != 3:
      raise ValueError(f"{self.train_ds.name} has {c}-channel images; codecs code RGB")
    if h != w:
      raise ValueError(f"{self.train_ds.name} images are {h}x{w}; codec.crop=0 needs squares")
    self._check_size(h)
    self.steps_per_epoch = max(len(self.train_ds) // config.train.batch_size, 1)

  # --- data ---------------------------------------------------------------
  def train_iterator(self, *, seed: int, start_step: int) -> Iterator[Batch]:
    if self.train_ds is not None:
      return data_lib.train_batches(
          self.train_ds, batch_size=self.config.train.batch_size, seed=seed,
          start_step=start_step, augment=self.config.data.augment,
          process_index=jax.process_index(), process_count=jax.process_count())
    return self._photo_crops(seed=seed, start_step=start_step)

  def _photo_crops(self, *, seed: int, start_step: int) -> Iterator[Batch]:
    b = self.config.train.batch_size
    local = b // jax.process_count()
    sl = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    step = start_step
    while True:
      crops = random_crops(self.train_images, crop=self.config.codec.crop, batch_size=b,
                           seed=seed, step=step)
      yield {"image": crops[sl]}
      step += 1

  @functools.cached_property
  def eval_images(self) -> list[np.ndarray]:
    path = self.config.codec.eval_path or data_lib.kodak_dir()
    images = data_lib.load_images(path)
    n = self.config.data.num_eval_examples
    return images[:n] if n else images

  # --- model ----------------------------------------------------------------
  def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
    x = to_unit_float(jnp.asarray(batch["image"][:1]))
    return flax.core.unfreeze(self.model.init(rng, x, mode="dequantize"))

  def _forward(self, variables, x, *, mode, key=None):
    out = self.model.apply(variables, x, mode=mode, key=key)
    num_pixels = x.shape[0] * x.shape[1] * x.shape[2]
    bpp = {k: metrics.bits_per_pixel(v, num_pixels) for k, v in out["likelihoods"].items()}
    return out, bpp

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    x = to_unit_float(batch["image"])
    mode = self.config.codec.quantization if train else "dequantize"
    out, bpp = self._forward(variables, x, mode=mode, key=rng)
    rate = sum(bpp.values())
    mse = jnp.mean(jnp.square(out["x_hat"] - x))
    distortion = self.lmbda * learned.DISTORTIONS.get(self.config.codec.distortion).term(
        out["x_hat"], x)
    aux = self.model.apply(variables, method=self.model.aux_loss)
    rd = rate + distortion
    scalars = {"loss": rd + aux, "rd_loss": rd, "bpp": rate, "mse": mse,
               "psnr": 10.0 * jnp.log10(1.0 / mse), "aux_loss": aux,
               **{f"bpp_{k}": v for k, v in bpp.items()}}
    return rd + aux, (scalars, {})

  def apply_fn(self, variables: Variables, images: jax.Array) -> dict[str, jax.Array]:
    """The codec's inference pass (`mode="dequantize"`) on [0, 1] images."""
    return self.model.apply(variables, images, mode="dequantize")

  # --- evaluation -------------------------------------------------------------
  @functools.cached_property
  def _eval_step(self):
    def step(variables, image):
      x = to_unit_float(image)
      out, bpp = self._forward(variables, x, mode="dequantize")
      x_hat = jnp.clip(out["x_hat"], 0.0, 1.0)
      result = {"bpp": sum(bpp.values()), "psnr": metrics.psnr(x_hat, x)[0],
                "ms_ssim": metrics.ms_ssim(x_hat, x)[0]}
      return {**result, **{f"bpp_{k}": v for k, v in bpp.items()}}
    return jax.jit(step)

  @functools.cached_property
  def _dataset_eval_step(self):
    def step(variables, batch):
      x = to_unit_float(batch["image"])
      out = self.model.apply(variables, x, mode="dequantize")
      pixels = x.shape[1] * x.shape[2]
      bits = sum(-jnp.log2(p).sum(axis=(1, 2, 3)) for p in out["likelihoods"].values())
      mask = batch["mask"].astype(jnp.float32)
      psnr = metrics.psnr(jnp.clip(out["x_hat"], 0.0, 1.0), x)
      return {"bpp": (bits / pixels * mask).sum(), "psnr": (psnr * mask).sum(),
              "count": mask.sum()}
    return jax.jit(step)

  def _evaluate_dataset(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Mean per-image bpp (likelihoods) and PSNR over `data.eval_split` (`codec.crop = 0`)."""
    ds = data_lib.get_dataset(self.config.data, self.config.data.eval_split)
    totals = {"bpp": 0.0, "psnr": 0.0, "count": 0.0}
    for batch in data_lib.eval_batches(ds, batch_size=self.config.eval.batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()):
      out = self._dataset_eval_step(variables, parallel.host_to_global(batch, mesh))
      for k, v in jax.device_get(out).items():
        totals[k] += float(v)
    count = max(totals["count"], 1.0)
    return {"bpp": totals["bpp"] / count, "psnr": totals["psnr"] / count,
            "num_images": int(totals["count"])}

  def evaluate(self, variables: Variables, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Mean per-image bpp (from likelihoods), PSNR and MS-SSIM of the clipped reconstruction.

    Each image is cropped to a multiple of the model's downsampling (Kodak
    needs none). With `codec.crop = 0`: `_evaluate_dataset`.
    """
    if self.train_ds is not None:
      return self._evaluate_dataset(variables, mesh)
    del mesh
    d = self.model.downsampling
    rows = []
    for image in self.eval_images:
      h, w = image.shape[0] // d * d, image.shape[1] // d * d
      rows.append(jax.device_get(self._eval_step(variables, image[None, :h, :w])))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["num_images"] = len(rows)
    return out
