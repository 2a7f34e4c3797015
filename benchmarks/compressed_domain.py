"""Throughput: classifying from the bitstream (no synthesis) vs decoding then classifying.

  .venv/bin/python benchmarks/compressed_domain.py --quality 3 --images 256 --batch 64

Both pipelines start from the same `.jcx` streams of CIFAR-10 (JPEG q75)
test images upsampled 4x to 128x128 (`compressed_domain.upsample`), coded by
the shipped `hyperprior-q<quality>`, and end with logits of the same cResNet
trunk (`--width`; untrained: speed does not depend on the weights):

  * compressed domain: entropy-decode z and y (`decode_symbols`, host), then
    in one jitted program the hyper-synthesis `h_s(z_hat)` -> sigma-hat, the
    centred 8x8 view of (y-hat, sigma-hat) and the cResNet;
  * decoded: the same entropy decoding, then the synthesis `g_s(y_hat)` (the
    128x128 reconstruction), back to 32x32 (antialiased, 8-bit as
    `decompress`), normalisation and the pixel cResNet (4x4 space-to-depth:
    the same 8x8 trunk).

Both are measured in this one process, alternating (A B A B ...), `--repeats`
times over all images in batches of `--batch`; the medians, images/s and
their ratio are printed as JSON, with the share of the entropy decoding (the
same host code in both) and the jitted part alone. Only ratios mean anything
on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quality", type=int, default=3, help="shipped hyperprior-q<quality>")
  p.add_argument("--images", type=int, default=256)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--width", type=float, default=0.25, help="cResNet width multiplier")
  p.add_argument("--repeats", type=int, default=3)
  return p.parse_args()


def main() -> None:
  a = _parse()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxcomp import config_lib, data  # pylint: disable=g-import-not-at-top
  from jaxcomp.codecs import compression, latents, pretrained  # pylint: disable=g-import-not-at-top
  from jaxcomp.models import cresnet  # pylint: disable=g-import-not-at-top
  from jaxcomp.tasks import compressed_domain  # pylint: disable=g-import-not-at-top

  codec, params, _ = pretrained.load(f"hyperprior-q{a.quality}")
  ds = data.get_dataset(config_lib.base_config().data, "test")
  images, _ = ds.read(np.arange(a.images))
  coded = np.asarray(compressed_domain.upsample(jnp.asarray(images), 4))
  tables = compression.coding_tables(codec, params)
  streams = [compression.compress(codec, params, im, tables=tables) for im in coded]
  bits = 8 * np.mean([len(s) for s in streams])

  key = jax.random.key(0, impl="rbg")
  latent_net = cresnet.CResNet(10, width=a.width)
  pixel_net = cresnet.CResNet(10, width=a.width, input_channels=(3,), space_to_depth=4)
  latent_vars = jax.jit(latent_net.init)(key, jnp.zeros((1, 8, 8, 2 * codec.num_latent)))
  pixel_vars = jax.jit(pixel_net.init)(key, jnp.zeros((1, 32, 32, 3)))

  @jax.jit
  def from_latents(y_symbols, z_symbols):
    y_hat, sigma_hat = latents.latents_from_symbols(codec, params, y_symbols, z_symbols)
    x = jnp.concatenate(cresnet.center_crop([y_hat, sigma_hat], size=8), axis=-1)
    return latent_net.apply(latent_vars, x)[0]

  @jax.jit
  def from_pixels(y_symbols):
    y_hat = y_symbols.astype(jnp.float32) + codec.latent_offsets(params)["y"]
    x_hat = codec.apply({"params": params}, y_hat, method=codec.synthesize)
    x = data.normalize(compressed_domain.downsample(x_hat, 4), ds.mean, ds.std)
    return pixel_net.apply(pixel_vars, x)[0]

  def entropy_decode(batch):
    decoded = [compression.decode_symbols(codec, params, s, tables=tables)[1:] for s in batch]
    return np.concatenate([d[0] for d in decoded]), np.concatenate([d[1] for d in decoded])

  batches = [streams[i:i + a.batch] for i in range(0, len(streams) - a.batch + 1, a.batch)]
  symbols = [entropy_decode(b) for b in batches]
  pipelines = {
      "compressed_domain": lambda i: from_latents(*entropy_decode(batches[i])),
      "decoded": lambda i: from_pixels(entropy_decode(batches[i])[0]),
      "compressed_domain_jitted_part": lambda i: from_latents(*symbols[i]),
      "decoded_jitted_part": lambda i: from_pixels(symbols[i][0]),
      "entropy_decoding": lambda i: entropy_decode(batches[i]),
  }
  for fn in pipelines.values():   # compile
    jax.block_until_ready(fn(0))
  times: dict[str, list[float]] = {k: [] for k in pipelines}
  for _ in range(a.repeats):
    for name, fn in pipelines.items():
      t = time.perf_counter()
      for i in range(len(batches)):
        jax.block_until_ready(fn(i))
      times[name].append(time.perf_counter() - t)
  n = len(batches) * a.batch
  rate = {k: n / statistics.median(v) for k, v in times.items()}
  print(json.dumps({
      "quality": a.quality, "images": n, "batch": a.batch, "width": a.width,
      "repeats": a.repeats, "mean_stream_bits": bits, "device": str(jax.devices()[0]),
      "images_per_s": rate,
      "speedup_end_to_end": rate["compressed_domain"] / rate["decoded"],
      "speedup_jitted_part": rate["compressed_domain_jitted_part"] / rate["decoded_jitted_part"],
  }, indent=2))


if __name__ == "__main__":
  main()
