"""Quantization of latents around per-element offsets (medians or means).

Modes, as CompressAI's `EntropyModel.quantize` (Ballé et al. 2017 Sec. 2.3; 2018 Sec. 3):
  - "noise": `y + u`, `u ~ U(-1/2, 1/2)`, the differentiable training proxy;
  - "ste": `round(y - c) + c` forward, identity gradient (straight-through);
  - "dequantize": `round(y - c) + c` (inference);
  - "symbols": `round(y - c)` as int32 (what the entropy coder sees).
The offset `c` is treated as a constant (no gradient), as CompressAI detaches the medians.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcomp.ops.rounding import add_uniform_noise, round_st
from jaxcomp.registry import Registry

# mode -> fn(y, offset, key) (offset already stop-gradient'ed, in y's dtype).
MODES: Registry = Registry("latent quantization mode")


@MODES.register("noise")
def _noise(y, offset, key):
  del offset
  if key is None:
    raise ValueError("quantize_latents(mode='noise') needs a PRNG key")
  return add_uniform_noise(y, key)


MODES.register("ste", lambda y, offset, key: round_st(y - offset) + offset)
MODES.register("dequantize", lambda y, offset, key: jnp.round(y - offset) + offset)
MODES.register("symbols", lambda y, offset, key: jnp.round(y - offset).astype(jnp.int32))


def quantize_latents(y: jax.Array, mode: str, offset: jax.Array | float = 0.0, *,
                     key: jax.Array | None = None) -> jax.Array:
  """Quantizes latents `y` in `mode` (see module docstring).

  Args:
    y: float latents, any shape.
    mode: a name in `MODES` ("noise", "ste", "dequantize", "symbols").
    offset: broadcastable to `y` (per-channel medians, Gaussian means, or 0).
    key: PRNG key, required for mode "noise".

  Returns:
    Float array like `y`, or int32 symbols for mode "symbols".
  """
  try:
    fn = MODES.get(mode)
  except KeyError as e:
    raise ValueError(e.args[0]) from None
  return fn(y, jax.lax.stop_gradient(jnp.asarray(offset, y.dtype)), key)
