"""Filter ranking for RePr (Ch. 5 of the Brandeis thesis, papers/001): drop scores.

Every metric returns a *drop score* per filter, {layer path: [C_out] float32}:
the higher the score, the earlier the filter is dropped (Algorithm 3, line 6,
"bottom p %" of the ranking). Importance metrics are negated so that the least
important filters score highest:

  metric            drop score of filter f                         needs
  "ortho"           O[f] of Eq. 5.1-5.2 (thesis)                   params
  "ortho_official"  the author's code's variant (see below)        params
  "weight_norm"     -||W_f||_2                  (Han et al. 2016)  params
  "gradient"        -sum |dL/dW_f|              (LeCun et al. 1989) params, grads
  "taylor"          -sum |W_f * dL/dW_f|        (Molchanov et al.) params, grads
  "activation_norm" -mean_b ||relu(a_b,f)||_2   over h, w          responses
  "apoz"            mean(relu(a_f) == 0)        (Hu et al. 2016)   responses
  "random"          U(0, 1), seeded                                key
and the greedy Oracle (`greedy_oracle`, small nets only). Responses `a` are
`layers.filter_responses` (BatchNorm outputs, before the ReLU). Sums over a
filter run over its kh * kw * C_in weights (not its bias).
"""

from __future__ import annotations

from typing import Any, Callable, Collection

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.repr import layers as layers_lib

Scores = dict[str, jax.Array]
METRICS = ("ortho", "ortho_official", "weight_norm", "gradient", "taylor",
           "activation_norm", "apoz", "random")
_VARIANTS = ("thesis", "official")


def _rows(kernel: jax.Array) -> jax.Array:
  """[kh, kw, C_in, C_out] -> [C_out, kh * kw * C_in] float32: one flattened filter per row."""
  if kernel.ndim != 4:
    raise ValueError(f"expected a conv kernel [kh, kw, C_in, C_out], got shape {kernel.shape}")
  return kernel.reshape(-1, kernel.shape[-1]).T.astype(jnp.float32)


def _safe_norm(x: jax.Array, axis: Any = None, keepdims: bool = False) -> jax.Array:
  """L2 norm with a finite gradient at 0 (a dropped, all-zero filter)."""
  return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=keepdims),
                              jnp.finfo(jnp.float32).tiny))


def _gram(w: jax.Array) -> jax.Array:
  return jnp.matmul(w, w.T, precision=jax.lax.Precision.HIGHEST)


def inter_filter_orthogonality(kernel: jax.Array, *, variant: str = "thesis") -> jax.Array:
  """Inter-filter orthogonality O[f] of one conv layer (Eq. 5.1-5.2); higher = more overlap.

  "thesis" (default, Eq. 5.1-5.2): rows w_f of W [J, k*k*c] are normalised
  one by one, `W_hat[f] = w_f / ||w_f||`, `P = |W_hat W_hat^T - I|`
  elementwise and `O[f] = sum_j P[f, j] / J`. The sum includes the diagonal, as
  Eq. 5.2 writes it; for normalised rows it is |1 - 1| = 0 up to rounding
  (~1e-7), and 1 for an all-zero filter (whose row stays zero).

  "official" (iamaaditya/repr-ortho `ranking.py`): W is normalised by the whole
  layer's Frobenius norm, the diagonal of `W_hat W_hat^T` is removed, the mean
  over rows is taken *before* the absolute value:
  `O[f] = |sum_{j != f} <w_f, w_j>| / (J ||W||_F^2)`.

  Args:
    kernel: [kh, kw, C_in, C_out] conv kernel (Flax HWIO), any float dtype.
    variant: "thesis" or "official".

  Returns:
    [C_out] float32 in [0, 1] ("thesis") or [0, 1) ("official").
  """
  if variant not in _VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; known: {_VARIANTS}")
  w = _rows(kernel)
  j = w.shape[0]
  if variant == "thesis":
    w_hat = w / _safe_norm(w, axis=1, keepdims=True)
    return jnp.sum(jnp.abs(_gram(w_hat) - jnp.eye(j)), axis=1) / j
  w_hat = w / _safe_norm(w)
  g = _gram(w_hat)
  return jnp.abs(jnp.sum(g, axis=1) - jnp.diagonal(g)) / j


def orthogonality_loss(params: Any, *, weight: float = 0.01) -> jax.Array:
  """`weight * sum_l sum_{f,j} P_l[f, j]`, the orthogonality penalty of Sec. 5.6 ("OL").

  P_l is Eq. 5.1 (thesis normalisation) of every conv layer l of `params`;
  `weight` is the thesis's lambda (0.01, Table 5.2). Differentiable (finite
  gradient at all-zero filters too) and jit-able.

  Returns:
    scalar float32 >= 0.
  """
  kernels = layers_lib.conv_kernels(params)
  return weight * sum(k.shape[-1] * jnp.sum(inter_filter_orthogonality(k))
                      for k in kernels.values())


def _per_filter_sum(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(-1, x.shape[-1]).astype(jnp.float32), axis=0)


def drop_scores(metric: str, params: Any, *, grads: Any = None,
                responses: dict[str, jax.Array] | None = None,
                key: jax.Array | None = None) -> Scores:
  """Drop scores of every conv filter of `params` by `metric` (table in the module doc).

  Args:
    metric: one of `METRICS`.
    params: the parameter tree (`variables["params"]`).
    grads: dL/dparams, same tree ("gradient", "taylor"), e.g. a batch-mean gradient.
    responses: {layer path: [B, h, w, C_out]} from `layers.filter_responses`
      ("activation_norm", "apoz"); average scores over batches yourself.
    key: PRNG key ("random").

  Returns:
    {layer path: [C_out] float32}, higher = dropped first.
  """
  if metric not in METRICS:
    raise ValueError(f"unknown metric {metric!r}; known: {METRICS} (and greedy_oracle)")
  kernels = layers_lib.conv_kernels(params)
  if metric in ("ortho", "ortho_official"):
    variant = "thesis" if metric == "ortho" else "official"
    return {p: inter_filter_orthogonality(k, variant=variant) for p, k in kernels.items()}
  if metric == "weight_norm":
    return {p: -_safe_norm(_rows(k), axis=1) for p, k in kernels.items()}
  if metric in ("gradient", "taylor"):
    g = {} if grads is None else layers_lib.conv_kernels(grads)
    if set(g) != set(kernels):
      raise ValueError(f"metric {metric!r} needs grads for exactly the conv layers "
                       f"{sorted(kernels)}")
    if metric == "gradient":
      return {p: -_per_filter_sum(jnp.abs(g[p])) for p in kernels}
    return {p: -_per_filter_sum(jnp.abs(k * g[p])) for p, k in kernels.items()}
  if metric in ("activation_norm", "apoz"):
    if responses is None or set(responses) != set(kernels):
      raise ValueError(f"metric {metric!r} needs responses for exactly the conv layers "
                       f"{sorted(kernels)}")
    a = {p: jax.nn.relu(r.astype(jnp.float32)) for p, r in responses.items()}
    if metric == "apoz":
      return {p: jnp.mean(r == 0, axis=(0, 1, 2)) for p, r in a.items()}
    return {p: -jnp.mean(_safe_norm(r, axis=(1, 2)), axis=0) for p, r in a.items()}
  if key is None:
    raise ValueError("metric 'random' needs a key")
  paths = sorted(kernels)
  return {p: jax.random.uniform(jax.random.fold_in(key, i), (kernels[p].shape[-1],))
          for i, p in enumerate(paths)}


def greedy_oracle(loss_fn: Callable[[dict[str, jax.Array]], jax.Array],
                  num_filters: dict[str, int], num_drop: int) -> Scores:
  """Greedy Oracle drop scores (Sec. 5.3): drop, one at a time, the filter whose loss rises least.

  Step t evaluates `loss_fn` with each remaining filter dropped in addition to
  the t already dropped ones and drops the one with the lowest loss. Costs
  `num_drop * F` evaluations (F filters in all): small nets only.

  Args:
    loss_fn: `loss_fn(dropped) -> scalar`, where `dropped` is {layer path: bool
      [C]} (True = dropped), e.g. the loss on a held-out batch of
      `masks.apply_masks(params, masks.filter_masks(params, dropped))`; jit-able.
    num_filters: {layer path: C} of the layers to rank.
    num_drop: the number of greedy steps, e.g. `int(p * F)`.

  Returns:
    {layer path: [C] float32}: the filter dropped at step t scores `F - t`; the
    filters never dropped score below them, ordered by the loss of the last step
    (lower loss, higher score).
  """
  paths = list(num_filters)
  sizes = [num_filters[p] for p in paths]
  total = sum(sizes)
  if not 0 <= num_drop <= total:
    raise ValueError(f"num_drop must be in [0, {total}], got {num_drop}")
  splits = np.cumsum(sizes)[:-1]

  @jax.jit
  def candidate_losses(dropped: jax.Array) -> jax.Array:
    def one(i):
      parts = jnp.split(dropped.at[i].set(True), splits)
      return loss_fn(dict(zip(paths, parts)))
    return jnp.where(dropped, jnp.inf, jax.lax.map(one, jnp.arange(total)))

  dropped = np.zeros(total, bool)
  scores = np.zeros(total, np.float32)
  losses = np.zeros(total, np.float32)
  for t in range(num_drop + 1):
    losses = np.asarray(candidate_losses(jnp.asarray(dropped)))
    if t == num_drop:
      break
    f = int(np.argmin(losses))
    dropped[f], scores[f] = True, total - t
  order = np.argsort(losses[~dropped], kind="stable")   # lowest loss first
  rest = np.empty(order.size, np.float32)
  rest[order] = total - num_drop - np.arange(order.size)
  scores[~dropped] = rest
  return {p: jnp.asarray(s) for p, s in zip(paths, np.split(scores, splits))}


def select_filters(scores: Scores, fraction: float, *, exclude: Collection[str] = (),
                   max_fraction_per_layer: float | None = None
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
    scores: {layer path: [C] float} drop scores (`drop_scores`, `greedy_oracle`).
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
