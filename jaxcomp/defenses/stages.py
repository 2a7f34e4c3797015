"""The defense stages the robustness runner composes by name (`stages="pd+wd"`).

A stage is registered in `DEFENSE_STAGES` as a `Stage`: the keyword arguments
it accepts and `make(context, **kwargs) -> stage(images, key) -> images`, where
`context` carries what a stage may need of the defended model
(`context["rcam_fn"]`: images -> R-CAM maps). A new defense stage is one
registration here (or in its own module). "msroi" / "aug_msroi" are the semantic
JPEG defense (`semantic_jpeg_defense`, aug=False / True) with the shipped
MS-ROI network's maps; they need nothing of the defended model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from jaxcomp.defenses.jpeg import jpeg_defense
from jaxcomp.defenses.pixel_deflection import pixel_deflection
from jaxcomp.defenses.semantic_jpeg import semantic_jpeg_defense
from jaxcomp.defenses.wavelet import denoise_wavelet
from jaxcomp.registry import Registry

StageFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A defense stage: its keyword arguments, its constructor, whether it draws randomness."""
  args: tuple[str, ...]
  make: Callable[..., StageFn]
  random: bool = False


DEFENSE_STAGES: Registry[Stage] = Registry("defense stage")

DEFENSE_STAGES.register("jpeg", Stage(
    ("quality", "subsampling"),
    lambda context, **kw: lambda x, key: jpeg_defense(x, key, **kw)))
DEFENSE_STAGES.register("wd", Stage(
    ("sigma", "wavelet", "mode", "method", "wavelet_levels", "convert2ycbcr", "rescale_sigma"),
    lambda context, **kw: lambda x, key: jnp.clip(denoise_wavelet(x, **kw), 0.0, 1.0)))


def _pixel_deflection(context: Mapping[str, Any], *, rcam: bool = True, **kw) -> StageFn:
  """Pixel deflection, guided by the defended model's R-CAM unless `rcam=False`."""
  rcam_fn = context.get("rcam_fn")
  if rcam and rcam_fn is None:
    raise ValueError("stage 'pd' deflects guided by R-CAM but no rcam_fn was given")

  def stage(x: jax.Array, key: jax.Array) -> jax.Array:
    guide = jax.lax.stop_gradient(rcam_fn(x)) if rcam else None
    return pixel_deflection(x, key, rcam=guide, **kw)

  return stage


DEFENSE_STAGES.register("pd", Stage(("deflections", "window", "rcam"), _pixel_deflection,
                                    random=True))

_SEMANTIC_JPEG_ARGS = ("levels", "method", "short_side", "pooling", "final_quality",
                       "subsampling")
DEFENSE_STAGES.register("msroi", Stage(
    _SEMANTIC_JPEG_ARGS,
    lambda context, **kw: lambda x, key: semantic_jpeg_defense(x, key, aug=False, **kw)))
DEFENSE_STAGES.register("aug_msroi", Stage(
    _SEMANTIC_JPEG_ARGS + ("num_perturbations", "input_noise", "jitter", "activation_noise",
                           "dropout_rate"),
    lambda context, **kw: lambda x, key: semantic_jpeg_defense(x, key, aug=True, **kw),
    random=True))
