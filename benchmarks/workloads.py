"""The jaxcomp side of every benchmark: one compiled step per workload, nothing else.

The comparison benchmarks (`train_throughput.py`, `codec.py`, `attacks.py`,
`jpeg_layer.py`, `defenses.py`) time these against their references; the
accelerator suite (`accelerator.py`) times them alone on whatever device JAX
sees and reads their FLOPs and bytes from XLA's cost analysis.

Each builder returns a `Workload`: `step()` runs one compiled call and blocks,
`items` is what one call processes (images, pixels), `compile_s` the compile time.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp import attacks, metrics, models, train
from jaxcomp.codecs import learned
from jaxcomp.defenses import pd_rcam_dwt
from jaxcomp.layers.jpeg_layer import JpegLayer
from jaxcomp.models.classifier import ImageClassifier
from jaxcomp.tasks.classification import cross_entropy, to_unit_float

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass
class Workload:
  """A compiled step: `step()` runs it once (blocking); `items` per call in `unit`."""
  name: str
  unit: str
  items: float
  step: Callable[[], Any]
  compile_s: float
  cost: dict[str, float]          # XLA's estimate: "flops", "bytes accessed" per call


def _compile(fn: Callable, *args) -> tuple[Any, float, dict[str, float]]:
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - start
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else (analysis or {})
  cost = {k: float(analysis.get(k, 0.0)) for k in ("flops", "bytes accessed")}
  return compiled, seconds, cost


def resnet20_classifier(dtype: Any = jnp.float32) -> ImageClassifier:
  return ImageClassifier(backbone=models.MODELS.get("resnet20")(num_classes=10, dtype=dtype),
                         mean=CIFAR_MEAN, std=CIFAR_STD)


def resnet20_train(batch: int = 128, *, dtype: Any = jnp.float32, seed: int = 0) -> Workload:
  """One SGD-momentum step of ResNet-20 on uint8 32x32 images (`train.train_step`)."""
  rng = np.random.default_rng(seed)
  data = {"image": jnp.asarray(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)),
          "label": jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))}
  model = resnet20_classifier(dtype)
  variables = dict(model.init(jax.random.PRNGKey(0), to_unit_float(data["image"][:1])))
  params = variables.pop("params")
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))

  def loss_fn(v, b, rng, *, train):
    del rng
    (logits, _), updates = model.apply(v, to_unit_float(b["image"]), train=train,
                                       mutable=["batch_stats"])
    loss = cross_entropy(logits, b["label"], num_classes=10).mean()
    return loss, ({"loss": loss}, updates)

  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, collections=variables,
                           opt_state=tx.init(params), ema_params={}, rng=jax.random.PRNGKey(1))
  fn = lambda s, b: train.train_step(s, b, loss_fn=loss_fn, tx=tx, schedule=lambda _: 0.1)
  compiled, seconds, cost = _compile(fn, state, data)
  holder = [state]

  def step():
    holder[0], metrics_ = compiled(holder[0], data)
    jax.block_until_ready(metrics_["loss"])
  name = f"ResNet-20 train, batch {batch}" + (", bf16" if dtype == jnp.bfloat16 else "")
  return Workload(name, "images", batch, step, seconds, cost)


def hyperprior_train(batch: int = 8, crop: int = 256, *, num_filters: int = 128,
                     num_latent: int = 192, seed: int = 0) -> Workload:
  """One Adam step of the hyperprior's rate-distortion loss (lambda 0.0067, MSE)."""
  model = learned.build("hyperprior", num_filters=num_filters, num_latent=num_latent)
  x = jnp.asarray(np.random.default_rng(seed).random((batch, crop, crop, 3), np.float32))
  params = model.init(jax.random.key(0, impl="rbg"), x[:1], mode="dequantize")["params"]
  labels = jax.tree_util.tree_map_with_path(
      lambda p, _: "a" if "quantiles" in str(p[-1]) else "d", params)
  tx = optax.multi_transform({"d": optax.adam(1e-4), "a": optax.adam(1e-3)}, labels)

  def fn(params, state, key):
    def loss(p):
      out = model.apply({"params": p}, x, mode="noise", key=key)
      bpp = metrics.bits_per_pixel(out["likelihoods"], batch * crop * crop)
      rd = bpp + 0.0067 * 255 ** 2 * jnp.mean((out["x_hat"] - x) ** 2)
      return rd + model.apply({"params": p}, method=model.aux_loss)
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  carry = [params, tx.init(params)]
  key = jax.random.key(1, impl="rbg")
  compiled, seconds, cost = _compile(fn, carry[0], carry[1], key)

  def step():
    carry[0], carry[1] = compiled(carry[0], carry[1], key)
    jax.block_until_ready(carry[0])
  return Workload(f"hyperprior train N{num_filters} M{num_latent}, {batch}x{crop}^2",
                  "pixels", batch * crop * crop, step, seconds, cost)


def pgd20(batch: int = 128, *, seed: int = 0) -> Workload:
  """PGD-20 (L-inf 8/255, step 2/255) against ResNet-20 on 32x32 images."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.random((batch, 32, 32, 3), np.float32))
  y = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
  model = resnet20_classifier()
  variables = model.init(jax.random.key(0), x[:1])
  apply_fn = lambda v, images: model.apply(v, images)[0]
  fn = lambda v, images, labels, key: attacks.pgd(apply_fn, v, images, labels, key, eps=8 / 255,
                                                  step_size=2 / 255, num_steps=20)[0]
  key = jax.random.key(1)
  compiled, seconds, cost = _compile(fn, variables, x, y, key)
  return Workload(f"PGD-20, batch {batch}", "images", batch,
                  lambda: jax.block_until_ready(compiled(variables, x, y, key)), seconds, cost)


def jpeg_layer(batch: int, size: int, *, wrt_images: bool = True, seed: int = 0) -> Workload:
  """Forward + backward of the JPEG-DL layer (gradients for the tables, and the images)."""
  layer = JpegLayer()
  x = jnp.asarray(np.random.default_rng(seed).random((batch, size, size, 3), np.float32))
  params = layer.init(jax.random.key(0), x[:1])["params"]
  loss = lambda p, images: jnp.sum(layer.apply({"params": p}, images) ** 2)
  fn = jax.grad(loss, argnums=(0, 1) if wrt_images else 0)
  compiled, seconds, cost = _compile(fn, params, x)
  what = "images+tables" if wrt_images else "tables"
  return Workload(f"JPEG layer fwd+bwd ({what}), {batch}x{size}^2", "pixels",
                  batch * size * size, lambda: jax.block_until_ready(compiled(params, x)),
                  seconds, cost)


def defense(batch: int, size: int, *, seed: int = 0) -> Workload:
  """Pixel deflection (100, window 10, untargeted) + BayesShrink wavelet denoising (sigma 0.04)."""
  x = jnp.asarray(np.random.default_rng(seed).random((batch, size, size, 3), np.float32))
  key = jax.random.key(1)
  fn = lambda images, k: pd_rcam_dwt(images, k, deflections=100, window=10, sigma=0.04)
  compiled, seconds, cost = _compile(fn, x, key)
  return Workload(f"pixel deflection + BayesShrink, {batch}x{size}^2", "images", batch,
                  lambda: jax.block_until_ready(compiled(x, key)), seconds, cost)
