"""Learned image codecs: bls2017, bmshj2018-factorized and bmshj2018-hyperprior (SPEC Sec. 3).

Transforms as Ballé, Laparra, Simoncelli 2017 (Fig. 1: `bls2017`) and Ballé et
al. 2018 (Fig. 4: `factorized`, `hyperprior`), with CompressAI's layer naming
(`g_a`, `g_s`, `h_a`, `h_s`, `entropy_bottleneck`). Images are NHWC floats in
[0, 1]; height and width must be multiples of `model.downsampling` (16, or 64
for the hyperprior).

Every model's `__call__(x, *, mode, key)` returns
`{"x_hat", "likelihoods": {"y"[, "z"]}, "y", "y_hat"[, "z", "z_hat", "scales"]}`,
where `mode` is "noise" / "ste" (training proxies) or "dequantize" (inference);
`aux_loss()` is the entropy bottleneck's quantile loss.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.entropy import gaussian_conditional
from jaxcomp.entropy.factorized import EntropyBottleneck
from jaxcomp.entropy.quantization import quantize
from jaxcomp.layers.gdn import GDN
from jaxcomp.ops.conv_transpose import conv_transpose

ARCHITECTURES = ("factorized", "hyperprior", "bls2017")
QUALITIES = range(1, 9)
# lambda per quality, SPEC Sec. 3 (CompressAI's MSE training values).
LAMBDA_MSE = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
# lambda for L = R + lambda (1 - MS-SSIM): CompressAI's model-zoo MS-SSIM training
# values (recalled from its documentation; not re-checked against a copy here).
LAMBDA_MS_SSIM = (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.0)


def preset(architecture: str, quality: int) -> tuple[int, int]:
  """`(N, M)` of a quality preset (SPEC Sec. 3): qualities 6-8 use the wider model."""
  if architecture not in ARCHITECTURES:
    raise ValueError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")
  if quality not in QUALITIES:
    raise ValueError(f"quality must be in 1..8, got {quality!r}")
  high = quality >= 6
  if architecture == "bls2017":
    return (192, 192) if high else (128, 128)
  return (192, 320) if high else (128, 192)


def lmbda(quality: int, distortion: str = "mse") -> float:
  """The rate-distortion trade-off lambda of a quality preset."""
  if quality not in QUALITIES:
    raise ValueError(f"quality must be in 1..8, got {quality!r}")
  table = {"mse": LAMBDA_MSE, "ms_ssim": LAMBDA_MS_SSIM}.get(distortion)
  if table is None:
    raise ValueError(f"unknown distortion {distortion!r}; known: mse, ms_ssim")
  return table[quality - 1]


class ConvTranspose(nn.Module):
  """Transposed convolution ("SAME", flax `nn.ConvTranspose` semantics and parameters).

  Computed by `ops.conv_transpose` (stride-1 convolution + depth-to-space), which
  trains ~10x faster than an input-dilated convolution on XLA's CPU backend.
  """
  features: int
  kernel_size: int
  stride: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return conv_transpose(x, kernel, self.stride) + bias


class Transform(nn.Module):
  """A stack of (transposed) convolutions with GDN / IGDN or ReLU between them.

  `layers` lists `(features, kernel, stride)`; convolutions are named `conv_i`
  and the non-linearities `gdn_i`. Transposed ("synthesis") stacks upsample by
  the stride and use IGDN.
  """
  layers: tuple[tuple[int, int, int], ...]
  transpose: bool = False
  activation: str = "gdn"        # "gdn" | "relu"
  final_relu: bool = False
  simplified_gdn: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, (features, kernel, stride) in enumerate(self.layers):
      if self.transpose:
        x = ConvTranspose(features, kernel, stride, name=f"conv_{i}")(x)
      else:
        x = nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                    name=f"conv_{i}")(x)
      if i < len(self.layers) - 1:
        if self.activation == "gdn":
          x = GDN(inverse=self.transpose, simplified=self.simplified_gdn, name=f"gdn_{i}")(x)
        else:
          x = nn.relu(x)
    return nn.relu(x) if self.final_relu else x


def _check_input(x: jax.Array, downsampling: int) -> None:
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"expected NHWC images with 3 channels, got shape {x.shape}")
  if x.shape[1] % downsampling or x.shape[2] % downsampling:
    raise ValueError(f"height and width must be multiples of {downsampling}, got "
                     f"{x.shape[1]}x{x.shape[2]} (pad first, e.g. codecs.compress does)")


def _bmshj_analysis(n: int, m: int) -> tuple[tuple[int, int, int], ...]:
  return ((n, 5, 2), (n, 5, 2), (n, 5, 2), (m, 5, 2))


def _bmshj_synthesis(n: int) -> tuple[tuple[int, int, int], ...]:
  return ((n, 5, 2), (n, 5, 2), (n, 5, 2), (3, 5, 2))


def _split(key: jax.Array | None) -> tuple[jax.Array | None, jax.Array | None]:
  return (None, None) if key is None else tuple(jax.random.split(key))


class FactorizedPrior(nn.Module):
  """bmshj2018-factorized: 4 x [conv 5x5 /2] with GDN, mirrored with IGDN; factorized prior."""
  num_filters: int = 128
  num_latent: int = 192
  gdn: str = "classic"
  downsampling = 16

  def _analysis_layers(self):
    return _bmshj_analysis(self.num_filters, self.num_latent)

  def _synthesis_layers(self):
    return _bmshj_synthesis(self.num_filters)

  def setup(self):
    simplified = self.gdn == "simplified"
    self.g_a = Transform(self._analysis_layers(), simplified_gdn=simplified)
    self.g_s = Transform(self._synthesis_layers(), transpose=True, simplified_gdn=simplified)
    self.entropy_bottleneck = EntropyBottleneck(channels=self._analysis_layers()[-1][0])

  def __call__(self, x: jax.Array, *, mode: str = "dequantize",
               key: jax.Array | None = None) -> dict:
    _check_input(x, self.downsampling)
    y = self.g_a(x)
    y_hat, y_likelihood = self.entropy_bottleneck(y, mode=mode, key=key)
    return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihood}, "y": y, "y_hat": y_hat}

  def analyze(self, x: jax.Array) -> jax.Array:
    _check_input(x, self.downsampling)
    return self.g_a(x)

  def synthesize(self, y_hat: jax.Array) -> jax.Array:
    return self.g_s(y_hat)

  def aux_loss(self) -> jax.Array:
    return self.entropy_bottleneck.aux_loss()


class BLS2017(FactorizedPrior):
  """Ballé, Laparra, Simoncelli 2017: conv 9x9 /4, GDN, conv 5x5 /2, GDN, conv 5x5 /2; M = N."""
  num_latent: int = 0            # 0 -> num_filters (the paper's single width)

  def _analysis_layers(self):
    n = self.num_filters
    return ((n, 9, 4), (n, 5, 2), (self.num_latent or n, 5, 2))

  def _synthesis_layers(self):
    n = self.num_filters
    return ((n, 5, 2), (n, 5, 2), (3, 9, 4))


class ScaleHyperprior(nn.Module):
  """bmshj2018-hyperprior: factorized transforms, zero-mean Gaussian y with scales from z."""
  num_filters: int = 128
  num_latent: int = 192
  gdn: str = "classic"
  downsampling = 64

  def setup(self):
    n, m = self.num_filters, self.num_latent
    simplified = self.gdn == "simplified"
    self.g_a = Transform(_bmshj_analysis(n, m), simplified_gdn=simplified)
    self.g_s = Transform(_bmshj_synthesis(n), transpose=True, simplified_gdn=simplified)
    self.h_a = Transform(((n, 3, 1), (n, 5, 2), (n, 5, 2)), activation="relu")
    self.h_s = Transform(((n, 5, 2), (n, 5, 2), (m, 3, 1)), transpose=True, activation="relu",
                         final_relu=True)
    self.entropy_bottleneck = EntropyBottleneck(channels=n)

  def __call__(self, x: jax.Array, *, mode: str = "dequantize",
               key: jax.Array | None = None) -> dict:
    _check_input(x, self.downsampling)
    key_y, key_z = _split(key)
    y = self.g_a(x)
    z = self.h_a(jnp.abs(y))
    z_hat, z_likelihood = self.entropy_bottleneck(z, mode=mode, key=key_z)
    scales = self.h_s(z_hat)
    y_hat = quantize(y, mode, key=key_y)
    y_likelihood = gaussian_conditional.likelihood(y_hat, scales)
    return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihood, "z": z_likelihood},
            "y": y, "y_hat": y_hat, "z": z, "z_hat": z_hat, "scales": scales}

  def analyze(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(y, z)` for images `x`."""
    _check_input(x, self.downsampling)
    y = self.g_a(x)
    return y, self.h_a(jnp.abs(y))

  def hyper_synthesize(self, z_hat: jax.Array) -> jax.Array:
    """Scales of y (before the 0.11 bound) from the quantized hyper-latents."""
    return self.h_s(z_hat)

  def synthesize(self, y_hat: jax.Array) -> jax.Array:
    return self.g_s(y_hat)

  def aux_loss(self) -> jax.Array:
    return self.entropy_bottleneck.aux_loss()


def build(architecture: str, *, num_filters: int, num_latent: int, gdn: str = "classic"
          ) -> nn.Module:
  """The model of `architecture` with N = `num_filters`, M = `num_latent`."""
  if gdn not in ("classic", "simplified"):
    raise ValueError(f"gdn must be 'classic' or 'simplified', got {gdn!r}")
  if architecture == "factorized":
    return FactorizedPrior(num_filters, num_latent, gdn)
  if architecture == "hyperprior":
    return ScaleHyperprior(num_filters, num_latent, gdn)
  if architecture == "bls2017":
    return BLS2017(num_filters, gdn=gdn, num_latent=num_latent)
  raise ValueError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")


def from_config(codec: Any) -> nn.Module:
  """The model a `config.codec` section (or a dict of it) describes; 0 N / M take the preset."""
  n, m = preset(codec["architecture"], codec["quality"])
  return build(codec["architecture"], num_filters=codec["num_filters"] or n,
               num_latent=codec["num_latent"] or m, gdn=codec["gdn"])


def architecture_of(model: nn.Module) -> str:
  """The architecture name of a model built by `build`."""
  for name, cls in (("bls2017", BLS2017), ("factorized", FactorizedPrior),
                    ("hyperprior", ScaleHyperprior)):
    if isinstance(model, cls):
      return name
  raise ValueError(f"not a jaxcomp learned codec: {type(model).__name__}")
