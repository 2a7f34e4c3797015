"""Filter ranking for RePr (Ch. 5 of the Brandeis thesis, papers/001): drop scores.

Every metric returns a *drop score* per filter, {layer path: [C_out] float32}:
the higher the score, the earlier the filter is dropped (Algorithm 3, line 6,
"bottom p %" of the ranking). Importance metrics are negated so that the least
important filters score highest:

  metric            drop score of filter f                         needs
  "ortho"           O[f] of Eq. 5.1-5.2 (thesis)                   params
  "ortho_official"  the author's code's variant of O[f]            params
  "weight_norm"     -||W_f||_2                  (Han et al. 2016)  params
  "gradient"        -sum |dL/dW_f|              (LeCun 1989)       params, grads
  "taylor"          -sum |W_f * dL/dW_f|        (Molchanov 2017)   params, grads
  "activation_norm" -mean_b ||relu(a_b,f)||_2   over h, w          responses
  "apoz"            mean(relu(a_f) == 0)        (Hu et al. 2016)   responses
  "random"          U(0, 1), seeded                                key
and the greedy Oracle (`greedy_oracle`, small nets only). Responses `a` are
`layers.filter_responses` (BatchNorm outputs, before the ReLU). Sums over a
filter run over its kh * kw * C_in weights (not its bias).
"""

from __future__ import annotations

from typing import Any, Callable

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
