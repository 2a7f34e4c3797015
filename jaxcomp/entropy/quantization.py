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

MODES = ("noise", "ste", "dequantize", "symbols")


def quantize(y: jax.Array, mode: str, offset: jax.Array | float = 0.0, *,
             key: jax.Array | None = None) -> jax.Array:
  """Quantizes `y` in `mode` (see module docstring).

  Args:
    y: float latents, any shape.
    mode: one of `MODES`.
    offset: broadcastable to `y` (per-channel medians, Gaussian means, or 0).
    key: PRNG key, required for mode "noise".

  Returns:
    Float array like `y`, or int32 symbols for mode "symbols".
  """
  offset = jax.lax.stop_gradient(jnp.asarray(offset, y.dtype))
  if mode == "noise":
    if key is None:
      raise ValueError("quantize(mode='noise') needs a PRNG key")
    return add_uniform_noise(y, key)
  if mode == "ste":
    return round_st(y - offset) + offset
  if mode == "dequantize":
    return jnp.round(y - offset) + offset
  if mode == "symbols":
    return jnp.round(y - offset).astype(jnp.int32)
  raise ValueError(f"unknown quantization mode {mode!r}; known: {MODES}")
