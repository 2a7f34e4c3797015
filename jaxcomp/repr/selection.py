"""Global filter selection for RePr (Sec. 5.5 of the Brandeis thesis, papers/001).

"While we compute the metric for a filter over a single layer, the ranking is
computed over all the filters in the network": one ranking of the drop scores
of every layer (`ranking.drop_scores`, `ranking.greedy_oracle`), with the two
guards users of the author's code needed (REFERENCE_CODE.md Sec. E): layers
excluded from dropping (the first conv, which global ranking otherwise prunes
most) and a per-layer cap (no layer pruned away).
"""

from __future__ import annotations

from typing import Collection

import jax
import jax.numpy as jnp
import numpy as np


def select_filters(scores: dict[str, jax.Array], fraction: float, *,
                   exclude: Collection[str] = (), max_fraction_per_layer: float | None = None
                   ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Global ranking across layers (Sec. 5.5): drop the `fraction` of filters that score highest.

  `n = floor(fraction * F)` filters are dropped, F counting the filters of the
  layers not excluded (floor, as the author's code's `int(len * p / 100)`).
  With `max_fraction_per_layer = m`, a layer of C filters loses at most
  `floor(m * C)`: the walk down the global ranking skips filters of full
  layers (so fewer than n may be dropped when the caps bind everywhere). Ties
  go to the layer path that sorts first, then to the lower filter index.
  jit-able with `fraction`, `exclude` and `max_fraction_per_layer` static.

  Args:
    scores: {layer path: [C] float} drop scores (`ranking.drop_scores`,
      `ranking.greedy_oracle`).
    fraction: p in (0, 1) (the thesis: 0.3).
    exclude: layer paths never dropped, e.g. `(layers.first_conv(params,
      image_channels=3),)`: global ranking otherwise prunes mostly the first
      layer (REFERENCE_CODE.md Sec. E).
    max_fraction_per_layer: m in (0, 1], or None for no cap.

  Returns:
    ({layer path: [C] bool, True = dropped} for every layer of `scores`,
     {layer path: int32 scalar, the number dropped}).
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"fraction must be in (0, 1), got {fraction}")
  if max_fraction_per_layer is not None and not 0.0 < max_fraction_per_layer <= 1.0:
    raise ValueError(f"max_fraction_per_layer must be in (0, 1], got {max_fraction_per_layer}")
  if not scores:
    raise ValueError("no layers to rank")
  unknown = set(exclude) - set(scores)
  if unknown:
    raise ValueError(f"excluded layers {sorted(unknown)} are not among {sorted(scores)}")
  for p, s in scores.items():
    if s.ndim != 1:
      raise ValueError(f"scores of {p} must be 1-D [C], got shape {s.shape}")
  paths = sorted(p for p in scores if p not in exclude)
  dropped = {p: jnp.zeros(scores[p].shape, bool) for p in exclude}
  if paths:
    s = [jnp.asarray(scores[p], jnp.float32) for p in paths]
    sizes = [x.shape[0] for x in s]
    flat = jnp.concatenate(s)
    n = int(fraction * flat.shape[0])
    if max_fraction_per_layer is None:
      eligible = jnp.ones(flat.shape, bool)
    else:   # a filter can go iff fewer than the cap of its layer rank above it
      eligible = jnp.concatenate([
          jnp.argsort(jnp.argsort(-x, stable=True), stable=True) < int(max_fraction_per_layer * c)
          for x, c in zip(s, sizes)])
    order = jnp.lexsort((-flat, ~eligible))     # eligible first, then by score
    flat_dropped = jnp.zeros(flat.shape, bool).at[order[:n]].set(True) & eligible
    dropped.update(zip(paths, jnp.split(flat_dropped, np.cumsum(sizes)[:-1])))
  dropped = {p: dropped[p] for p in scores}
  return dropped, {p: jnp.sum(d, dtype=jnp.int32) for p, d in dropped.items()}
