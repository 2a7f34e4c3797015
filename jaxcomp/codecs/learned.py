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

**The codec protocol** (`LearnedCodec`), which `compression` (real bitstreams),
`bitstream` (the header's architecture code) and `pretrained` (weights) use,
with no architecture switch: a codec codes a main latent "y" and optionally a
side latent "z" before it (`coded_latents`); symbols are `round(latent - offset)`;
each latent's symbols are coded with `coding_tables(params)[name]` at the table
indexes `table_indexes` computes from the latents decoded before it (the
hyperprior's y: the scale indexes of `h_s(z_hat)`). A new codec is one module:
a Flax module with these members, registered with `@register("name", stream_id=k)`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp import metrics
from jaxcomp.entropy import coder, factorized, gaussian_conditional
from jaxcomp.entropy.factorized import EntropyBottleneck
from jaxcomp.entropy.quantization import quantize_latents
from jaxcomp.layers.gdn import GDN, GDN_FORMS
from jaxcomp.ops.conv import conv_general_dilated
from jaxcomp.ops.conv_transpose import conv_transpose
from jaxcomp.registry import Registry

QUALITIES = range(1, 9)


@dataclasses.dataclass(frozen=True)
class Distortion:
  """A distortion measure of rate-distortion training, `L = R + lambda * term(x_hat, x)`.

  Attributes:
    term: `(x_hat, x) -> scalar` for NHWC images in [0, 1].
    lambdas: lambda of quality presets 1..8.
    min_size: the smallest image side the term is defined for.
  """
  term: Callable[[jax.Array, jax.Array], jax.Array]
  lambdas: tuple[float, ...]
  min_size: int = 1


DISTORTIONS: Registry[Distortion] = Registry("distortion")
# lambda per quality, SPEC Sec. 3 (CompressAI's MSE training values); the term is
# 255^2 MSE, so lambda weighs the squared error of 8-bit pixels.
DISTORTIONS.register("mse", Distortion(
    lambda x_hat, x: 255.0 ** 2 * jnp.mean(jnp.square(x_hat - x)),
    (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)))
# L = R + lambda (1 - MS-SSIM): CompressAI's model-zoo MS-SSIM training values
# (recalled from its documentation; not re-checked against a copy here).
DISTORTIONS.register("ms_ssim", Distortion(
    lambda x_hat, x: 1.0 - jnp.mean(metrics.ms_ssim(x_hat, x)),
    (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.0), min_size=176))


def _check_quality(quality: int) -> None:
  if quality not in QUALITIES:
    raise ValueError(f"quality must be in 1..8, got {quality!r}")


def lmbda(quality: int, distortion: str = "mse") -> float:
  """The rate-distortion trade-off lambda of a quality preset."""
  _check_quality(quality)
  try:
    return DISTORTIONS.get(distortion).lambdas[quality - 1]
  except KeyError as e:
    raise ValueError(e.args[0]) from None


class LearnedCodec(Protocol):
  """What `compression`, `bitstream` and `pretrained` need of a learned codec.

  Class attributes: `architecture` (its registered name, set by `register`),
  `stream_id` (its code in the .jcx header, 0..255), `downsampling` (height and
  width must be multiples of it), `coded_latents` (("y",) or ("z", "y"): the
  side latent first). Fields written to the header: `num_filters`,
  `num_latent`, `gdn`. Methods called through `model.apply({"params": p}, ...,
  method=...)`: `analyze(x) -> {name: latent}`, `table_indexes(name, decoded,
  shape) -> int32 indexes` (decoded: the dequantized latents coded before
  `name`), `synthesize(y_hat) -> x_hat`. Plain methods of the parameters (host
  side): `latent_offsets(params) -> {name: offset}`, `coding_tables(params) ->
  {name: coder.Tables}`; `preset(quality) -> (N, M)` (classmethod).
  """
  architecture: ClassVar[str]
  stream_id: ClassVar[int]
  downsampling: ClassVar[int]
  coded_latents: ClassVar[tuple[str, ...]]
  num_filters: int
  num_latent: int
  gdn: str


CODECS: Registry[type] = Registry("codec architecture")


def register(name: str, *, stream_id: int) -> Callable[[type], type]:
  """Class decorator: registers a `LearnedCodec` under `name` with header code `stream_id`."""
  def add(cls: type) -> type:
    taken = {CODECS.get(n).stream_id: n for n in CODECS.names()}
    if not 0 <= stream_id < 256 or stream_id in taken:
      raise ValueError(f"codec {name!r}: stream_id {stream_id} must be a free code in 0..255 "
                       f"(taken: {taken})")
    cls.architecture = name
    cls.stream_id = stream_id
    return CODECS.register(name, cls)
  return add


def architecture_of_stream_id(stream_id: int) -> str:
  """The registered architecture name of a header code (KeyError if none)."""
  for name in CODECS.names():
    if CODECS.get(name).stream_id == stream_id:
      return name
  raise KeyError(f"no registered codec has stream code {stream_id}")


def preset(architecture: str, quality: int) -> tuple[int, int]:
  """`(N, M)` of a quality preset of `architecture` (SPEC Sec. 3)."""
  try:
    cls = CODECS.get(architecture)
  except KeyError as e:
    raise ValueError(f"unknown architecture: {e.args[0]}") from None
  _check_quality(quality)
  return cls.preset(quality)


def _bottleneck_tables(params: dict) -> coder.Tables:
  return coder.Tables.from_pmfs(*factorized.pmf_table(
      *factorized.density_from_params(params["entropy_bottleneck"])))


def _channel_indexes(shape: tuple[int, ...]) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(shape[-1], dtype=jnp.int32), shape)


def _medians(params: dict) -> jax.Array:
  return factorized.medians(params["entropy_bottleneck"]["quantiles"])


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
                    conv_general_dilated=conv_general_dilated, name=f"conv_{i}")(x)
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


@register("factorized", stream_id=0)
class FactorizedPrior(nn.Module):
  """bmshj2018-factorized: 4 x [conv 5x5 /2] with GDN, mirrored with IGDN; factorized prior."""
  num_filters: int = 128
  num_latent: int = 192
  gdn: str = "classic"
  downsampling: ClassVar[int] = 16
  coded_latents: ClassVar[tuple[str, ...]] = ("y",)

  @classmethod
  def preset(cls, quality: int) -> tuple[int, int]:
    """(N, M): qualities 6-8 use the wider model (SPEC Sec. 3)."""
    return (192, 320) if quality >= 6 else (128, 192)

  def _analysis_layers(self):
    return _bmshj_analysis(self.num_filters, self.num_latent)

  def _synthesis_layers(self):
    return _bmshj_synthesis(self.num_filters)

  def setup(self):
    simplified = GDN_FORMS.get(self.gdn)
    self.g_a = Transform(self._analysis_layers(), simplified_gdn=simplified)
    self.g_s = Transform(self._synthesis_layers(), transpose=True, simplified_gdn=simplified)
    self.entropy_bottleneck = EntropyBottleneck(channels=self._analysis_layers()[-1][0])

  def __call__(self, x: jax.Array, *, mode: str = "dequantize",
               key: jax.Array | None = None) -> dict:
    _check_input(x, self.downsampling)
    y = self.g_a(x)
    y_hat, y_likelihood = self.entropy_bottleneck(y, mode=mode, key=key)
    return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihood}, "y": y, "y_hat": y_hat}

  def analyze(self, x: jax.Array) -> dict[str, jax.Array]:
    """`{"y": latents}` of images `x` (protocol)."""
    _check_input(x, self.downsampling)
    return {"y": self.g_a(x)}

  def table_indexes(self, name: str, decoded: dict[str, jax.Array],
                    shape: tuple[int, ...]) -> jax.Array:
    """Per-channel tables (protocol)."""
    del name, decoded
    return _channel_indexes(shape)

  def synthesize(self, y_hat: jax.Array) -> jax.Array:
    return self.g_s(y_hat)

  def aux_loss(self) -> jax.Array:
    return self.entropy_bottleneck.aux_loss()

  def latent_offsets(self, params: dict) -> dict[str, jax.Array]:
    """y is coded around the bottleneck's medians (protocol)."""
    return {"y": _medians(params)}

  def coding_tables(self, params: dict) -> dict[str, coder.Tables]:
    return {"y": _bottleneck_tables(params)}


@register("bls2017", stream_id=2)
class BLS2017(FactorizedPrior):
  """Ballé, Laparra, Simoncelli 2017: conv 9x9 /4, GDN, conv 5x5 /2, GDN, conv 5x5 /2; M = N."""
  num_latent: int = 0            # 0 -> num_filters (the paper's single width)

  @classmethod
  def preset(cls, quality: int) -> tuple[int, int]:
    """N = M = 128 for qualities 1-5, 192 for 6-8 (SPEC Sec. 3)."""
    return (192, 192) if quality >= 6 else (128, 128)

  def _analysis_layers(self):
    n = self.num_filters
    return ((n, 9, 4), (n, 5, 2), (self.num_latent or n, 5, 2))

  def _synthesis_layers(self):
    n = self.num_filters
    return ((n, 5, 2), (n, 5, 2), (3, 9, 4))


@register("hyperprior", stream_id=1)
class ScaleHyperprior(nn.Module):
  """bmshj2018-hyperprior: factorized transforms, zero-mean Gaussian y with scales from z."""
  num_filters: int = 128
  num_latent: int = 192
  gdn: str = "classic"
  downsampling: ClassVar[int] = 64
  coded_latents: ClassVar[tuple[str, ...]] = ("z", "y")
  preset = FactorizedPrior.preset

  def setup(self):
    n, m = self.num_filters, self.num_latent
    simplified = GDN_FORMS.get(self.gdn)
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
    y_hat = quantize_latents(y, mode, key=key_y)
    y_likelihood = gaussian_conditional.likelihood(y_hat, scales)
    return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihood, "z": z_likelihood},
            "y": y, "y_hat": y_hat, "z": z, "z_hat": z_hat, "scales": scales}

  def analyze(self, x: jax.Array) -> dict[str, jax.Array]:
    """`{"y", "z"}` latents of images `x` (protocol)."""
    _check_input(x, self.downsampling)
    y = self.g_a(x)
    return {"y": y, "z": self.h_a(jnp.abs(y))}

  def hyper_synthesize(self, z_hat: jax.Array) -> jax.Array:
    """Scales of y (before the 0.11 bound) from the quantized hyper-latents."""
    return self.h_s(z_hat)

  def table_indexes(self, name: str, decoded: dict[str, jax.Array],
                    shape: tuple[int, ...]) -> jax.Array:
    """z: per channel; y: the Gaussian table of each element's scale from `h_s(z_hat)`."""
    if name == "z":
      return _channel_indexes(shape)
    return gaussian_conditional.scale_indexes(self.h_s(decoded["z"]),
                                              gaussian_conditional.scale_table())

  def synthesize(self, y_hat: jax.Array) -> jax.Array:
    return self.g_s(y_hat)

  def aux_loss(self) -> jax.Array:
    return self.entropy_bottleneck.aux_loss()

  def latent_offsets(self, params: dict) -> dict[str, Any]:
    """z around the bottleneck's medians, y (zero-mean Gaussian) around 0."""
    return {"z": _medians(params), "y": 0.0}

  def coding_tables(self, params: dict) -> dict[str, coder.Tables]:
    return {"z": _bottleneck_tables(params), "y": _gaussian_tables()}


@functools.lru_cache(maxsize=1)
def _gaussian_tables() -> coder.Tables:
  return coder.Tables.from_pmfs(*gaussian_conditional.pmf_table(gaussian_conditional.scale_table()))


ARCHITECTURES = tuple(CODECS.names())   # the built-in ones


def build(architecture: str, **fields: Any) -> nn.Module:
  """The registered codec `architecture` with its fields (`num_filters`, `num_latent`, `gdn`)."""
  try:
    cls = CODECS.get(architecture)
  except KeyError as e:
    raise ValueError(f"unknown architecture: {e.args[0]}") from None
  if "gdn" in fields and fields["gdn"] not in GDN_FORMS:
    raise ValueError(f"gdn must be one of {GDN_FORMS.names()}, got {fields['gdn']!r}")
  return cls(**fields)


def fields_of(model: nn.Module) -> dict[str, Any]:
  """The constructor fields of a codec (what `build` and the weights' metadata need)."""
  return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
          if f.init and f.name not in ("parent", "name")}


def from_config(codec: Any) -> nn.Module:
  """The model a `config.codec` section (or a dict of it) describes; 0 N / M take the preset."""
  n, m = preset(codec["architecture"], codec["quality"])
  return build(codec["architecture"], num_filters=codec["num_filters"] or n,
               num_latent=codec["num_latent"] or m, gdn=codec["gdn"])


def architecture_of(model: nn.Module) -> str:
  """The registered architecture name of a codec."""
  name = getattr(type(model), "architecture", None)
  if name is None or name not in CODECS:
    raise ValueError(f"not a registered jaxcomp learned codec: {type(model).__name__}")
  return name
