"""Re-introducing dropped filters (Algorithm 3, lines 10-12 of the Brandeis thesis, Ch. 5).

"Reinitialize the filters F-hat s.t. F-hat is perpendicular to F, and their
training-specific parameters from BatchNorm and Adam": `orthogonal_reinit`
(one kernel), `reinit_filters` (every conv of a parameter tree), `reset_bn`;
the optimizer moments are reset by `masks.reset_optimizer_moments`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcomp.repr import layers as layers_lib

_VARIANTS = ("thesis", "official")


def _orthonormal_rows(coeffs: np.ndarray, basis: np.ndarray) -> np.ndarray:
  """Orthonormal rows spanning `coeffs @ basis` ([n, k] @ [k, d] -> [n, d], n <= k)."""
  q, _ = np.linalg.qr(coeffs.T)
  return q.T @ basis


def _thesis_host(kernel: np.ndarray, dropped: np.ndarray, noise: np.ndarray) -> np.ndarray:
  """`orthogonal_reinit`'s thesis variant in float64 numpy (see its docstring)."""
  w = kernel.reshape(-1, kernel.shape[-1]).T.astype(np.float64)     # [C, d]
  dropped = dropped.astype(bool)
  n_new, d = int(dropped.sum()), w.shape[1]
  if n_new == 0:
    return kernel
  kept = w[~dropped]
  norms = np.linalg.norm(kept if len(kept) else w, axis=1)
  scale = norms.mean() if norms.mean() > 0 else 1.0
  if len(kept):
    _, s, vt = np.linalg.svd(kept, full_matrices=True)
    rank = int(np.sum(s > s[0] * max(kept.shape) * np.finfo(np.float64).eps))
  else:
    vt, rank = np.eye(d), 0
  g = noise[dropped].astype(np.float64)                               # [n_new, d]
  null, row = vt[rank:], vt[:rank]
  a = min(n_new, d - rank)            # in the null space of the kept filters
  b = min(n_new - a, rank)            # then in their row space, orthogonal to the first a
  new = [_orthonormal_rows(g[:a] @ null.T, null), _orthonormal_rows(g[a:a + b] @ row.T, row)]
  rest = g[a + b:]                    # more new filters than dimensions: random directions
  new.append(rest / np.linalg.norm(rest, axis=1, keepdims=True))
  w[dropped] = scale * np.concatenate(new)
  return w.T.reshape(kernel.shape).astype(kernel.dtype)


def _official(kernel: jax.Array, dropped: jax.Array, gain: float) -> jax.Array:
  """iamaaditya/repr-ortho `get_ortho_weights`: QR of the whole layer, dropped columns assigned."""
  d, c = int(np.prod(kernel.shape[:-1])), kernel.shape[-1]
  flat_shape = (c, d) if d < c else (d, c)     # a reshape of the kernel, not a transpose
  q, r = jnp.linalg.qr(kernel.astype(jnp.float32).reshape(flat_shape))
  q = q * jnp.sign(jnp.diagonal(r))
  if d < c:
    q = q.T
  new = (gain * q).reshape(kernel.shape).astype(kernel.dtype)
  return jnp.where(dropped, new, kernel)


def orthogonal_reinit(kernel: jax.Array, dropped: jax.Array, key: jax.Array, *,
                      variant: str = "thesis", gain: float = 1.0) -> jax.Array:
  """New values for the dropped filters of one conv layer, orthogonal to the kept ones.

  "thesis" (default): with the filters as rows of W [C, d] (d = kh * kw *
  C_in), K kept and D dropped, the kept rows' null space (dimension d - r, r
  their rank) is found by an SVD in float64 on the host, and
    1. the first min(D, d - r) new filters are an orthonormal set in that null
       space (random: a QR of Gaussian coefficients): each is orthogonal to
       every kept filter and to each other -- "F-hat perpendicular to F";
    2. fallback, when D > d - r (e.g. more filters than fan-in, C > d): the
       next min(D - (d - r), r) are orthonormal in the kept filters' row
       space, orthogonal to the new filters of step 1 and to each other but
       not to the kept ones;
    3. beyond d new filters (D > d) the rest are random unit directions.
  So the new filters are mutually orthogonal as far as d dimensions allow,
  and the first d - r of them are orthogonal to all kept filters. Each new
  filter is then scaled to the mean L2 norm of the layer's kept filters (of
  all its current filters when every filter is dropped; 1 if that is 0).
  Kept filters are returned unchanged. Runs through `jax.pure_callback`, so it
  also works under `jax.jit`.

  "official" (iamaaditya/repr-ortho `ortho.py`): a QR of the whole layer
  reshaped to [d, C] (a raw reshape to [C, d] when d < C), sign-corrected, times
  `gain`; dropped filters take their column of Q (unit norm times `gain`),
  orthogonal to the filters before them in column order only. `key` unused.

  Args:
    kernel: [kh, kw, C_in, C_out] float conv kernel (Flax HWIO).
    dropped: [C_out] bool, True = re-initialise.
    key: PRNG key of the random directions.
    variant: "thesis" or "official".
    gain: the "official" variant's scale.

  Returns:
    [kh, kw, C_in, C_out], the dtype of `kernel`.
  """
  kernel, dropped = jnp.asarray(kernel), jnp.asarray(dropped, bool)
  if kernel.ndim != 4:
    raise ValueError(f"expected a conv kernel [kh, kw, C_in, C_out], got shape {kernel.shape}")
  if dropped.shape != kernel.shape[-1:]:
    raise ValueError(f"dropped has shape {dropped.shape}, expected ({kernel.shape[-1]},)")
  if variant not in _VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; known: {_VARIANTS}")
  if variant == "official":
    return _official(kernel, dropped, gain)
  c, d = kernel.shape[-1], int(np.prod(kernel.shape[:-1]))
  noise = jax.random.normal(key, (c, d), jnp.float32)
  return jax.pure_callback(
      lambda k, m, g: _thesis_host(np.asarray(k), np.asarray(m), np.asarray(g)),
      jax.ShapeDtypeStruct(kernel.shape, kernel.dtype), kernel, dropped, noise)


def reinit_filters(params: Any, dropped: dict[str, jax.Array], key: jax.Array, *,
                   variant: str = "thesis") -> Any:
  """`params` with the dropped filters of every listed conv re-initialised.

  Kernels by `orthogonal_reinit` (key folded with the layer's index in sorted
  path order); conv biases of dropped filters set to 0 (Flax's bias init).
  BatchNorm: `reset_bn`.

  Args:
    params: the parameter tree.
    dropped: {layer path: [C_out] bool}, True = re-initialise.
    key: PRNG key.
    variant: "thesis" or "official" (`orthogonal_reinit`).
  """
  layers = layers_lib.filter_layers(params)
  unknown = set(dropped) - set(layers)
  if unknown:
    raise ValueError(f"dropped names unknown conv layers {sorted(unknown)}")
  flat = traverse_util.flatten_dict(params)
  for i, path in enumerate(sorted(dropped)):
    layer, d = layers[path], dropped[path]
    flat[layer.kernel] = orthogonal_reinit(flat[layer.kernel], d, jax.random.fold_in(key, i),
                                           variant=variant)
    if layer.bias is not None:
      flat[layer.bias] = jnp.where(d, jnp.zeros((), flat[layer.bias].dtype), flat[layer.bias])
  return traverse_util.unflatten_dict(flat)


def reset_bn(variables: Any, dropped: dict[str, jax.Array]) -> Any:
  """`variables` with the BatchNorm of each dropped filter reset to its initial state.

  For the channels of dropped filters only: scale := 1, bias := 0 ("params"),
  running mean := 0, var := 1 ("batch_stats", when present). Convs without a
  BatchNorm of their own (`layers.filter_layers`) are skipped. jit-able.

  Args:
    variables: {"params": ..., "batch_stats": ..., ...}.
    dropped: {layer path: [C_out] bool}.
  """
  layers = layers_lib.filter_layers(variables["params"])
  unknown = set(dropped) - set(layers)
  if unknown:
    raise ValueError(f"dropped names unknown conv layers {sorted(unknown)}")
  out = dict(variables)
  targets = {"params": {"scale": 1.0, "bias": 0.0}, "batch_stats": {"mean": 0.0, "var": 1.0}}
  for collection, values in targets.items():
    if collection not in variables:
      continue
    flat = traverse_util.flatten_dict(variables[collection])
    for path, d in dropped.items():
      bn = layers[path].bn
      for name, value in values.items():
        key = None if bn is None else bn + (name,)
        if key in flat:
          flat[key] = jnp.where(d, jnp.asarray(value, flat[key].dtype), flat[key])
    out[collection] = traverse_util.unflatten_dict(flat)
  return out
