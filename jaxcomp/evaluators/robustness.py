"""Robustness evaluation: accuracy under attacks, with and without defenses, adaptive or not.

For test batches, a dict of attacks and a dict of defenses, `evaluate` returns
one record per (attack, defense, adaptive) cell:

  * attack "clean" is the unattacked image; defense "none" the undefended model;
  * non-adaptive (the thesis's protocol, Table 4.1): the attack sees the bare
    classifier, the defense is applied to its output;
  * adaptive (SPEC Sec. 8): the attack sees `eot(defended(apply_fn,
    bpda(defense)), eot_samples)`, the defense with identity gradients
    averaged over its randomness; a defense result without it is "non-adaptive";
  * destruction rate (Ch. 3.7): `d = sum C(x)(1 - C(x'))C(T(x')) /
    sum C(x)(1 - C(x'))`, the fraction of the images the attack turned wrong
    that the defense T turns right again (NaN when the attack turned none).

A randomised defense is scored on one draw, or by the majority of
`vote_draws` draws (Ens-10: `vote_draws=10`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Collection, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import attacks as attacks_lib
from jaxcomp.defenses import majority_vote

Attack = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
Defense = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass
class Record:
  """One cell of the table: sums over the batches seen so far and the rates they give."""
  attack: str
  defense: str
  adaptive: bool
  count: int = 0
  correct: int = 0
  attacked_count: int = 0  # examples with an attack record
  attack_successes: int = 0  # on the model the attack saw
  rmse_sum: float = 0.0  # normalised L2 of the perturbations (the theses' |L2|)
  linf_sum: float = 0.0
  broken: int = 0  # sum C(x)(1 - C(x')): the destruction rate's denominator
  restored: int = 0  # sum C(x)(1 - C(x'))C(T(x')): its numerator

  @property
  def accuracy(self) -> float:
    return self.correct / self.count if self.count else float("nan")

  @property
  def destruction_rate(self) -> float:
    return self.restored / self.broken if self.broken else float("nan")

  def _mean(self, total: float) -> float:
    return total / self.attacked_count if self.attacked_count else float("nan")

  @property
  def attack_success(self) -> float:
    return self._mean(self.attack_successes)

  @property
  def rmse(self) -> float:
    return self._mean(self.rmse_sum)

  @property
  def linf(self) -> float:
    return self._mean(self.linf_sum)


def destruction_rate(clean_correct: Any, attacked_correct: Any, defended_correct: Any) -> float:
  """Ch. 3.7: `sum C(x)(1 - C(x'))C(T(x')) / sum C(x)(1 - C(x'))` over [N] bool arrays."""
  c, a, t = (np.asarray(v, bool) for v in (clean_correct, attacked_correct, defended_correct))
  broken = c & ~a
  return float(np.sum(broken & t) / np.sum(broken)) if broken.any() else float("nan")


def evaluate(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
             batches: Iterable[tuple[jax.Array, jax.Array]], *, attacks: Mapping[str, Attack],
             defenses: Mapping[str, Defense], key: jax.Array, adaptive: bool = True,
             adaptive_attacks: Collection[str] | None = None,
             eot_samples: int | Mapping[str, int] = 8,
             vote_draws: int | None | Mapping[str, int | None] = None,
             attack_fn: Callable[..., jax.Array] | None = None,
             log: Callable[[str], None] | None = None) -> list[Record]:
  """The robustness table of a classifier.

  Args:
    apply_fn: `apply_fn(params, images) -> logits [B, K]` on images in [0, 1].
    params: the classifier's parameters.
    batches: (images [B, H, W, C] in [0, 1], labels [B] int) pairs.
    attacks: name -> `attack(apply_fn, params, images, labels, key)` returning
      `(adversarial images, info)`, hyper-parameters bound (functools.partial).
    defenses: name -> `defense(images, key) -> images`.
    key: PRNG key for attacks and defenses.
    adaptive: also run the attacks against every defense through BPDA + EOT.
    adaptive_attacks: the attacks that get the adaptive column (None: all).
    eot_samples: EOT draws per forward pass of the adaptive attacks, one
      number or one per defense (1 suits a deterministic defense).
    vote_draws: score defended images by the majority of this many draws
      (None: one draw), one value or one per defense (missing: None).
    attack_fn: the model whose gradients the non-adaptive attacks follow
      (default `apply_fn`); e.g. a BPDA surrogate of a layer inside the model.
      Predictions always come from `apply_fn`.
    log: called with a line after each attack on each batch (progress of long runs).

  Returns:
    Records for ("clean", defense), (attack, "none") and (attack, defense,
    adaptive False / True), accuracies in [0, 1].
  """
  records: dict[tuple[str, str, bool], Record] = {}

  def add(attack, defense, is_adaptive, correct, info=None, clean=None, attacked=None):
    r = records.setdefault((attack, defense, is_adaptive), Record(attack, defense, is_adaptive))
    r.count += correct.shape[0]
    r.correct += int(np.sum(correct))
    if info is not None:
      r.attacked_count += correct.shape[0]
      r.attack_successes += int(np.sum(info["success"]))
      r.rmse_sum += float(np.sum(info["rmse"]))
      r.linf_sum += float(np.sum(info["linf"]))
    if clean is not None:
      broken = clean & ~attacked
      r.broken += int(np.sum(broken))
      r.restored += int(np.sum(broken & correct))

  per_defense = lambda v, name: v.get(name) if isinstance(v, Mapping) else v
  attack_fn = apply_fn if attack_fn is None else attack_fn
  predict = jax.jit(lambda x: jnp.argmax(apply_fn(params, x), -1))
  defended_predict = {
      name: jax.jit(lambda x, k, d=d, n=per_defense(vote_draws, name): (
          majority_vote(apply_fn, params, x, k, defense=d, num_draws=n)
          if n else jnp.argmax(apply_fn(params, d(x, k)), -1)))
      for name, d in defenses.items()}
  adaptive_models = {name: attacks_lib.eot(attacks_lib.defended(apply_fn, attacks_lib.bpda(d)),
                                           per_defense(eot_samples, name) or 1)
                     for name, d in defenses.items()}

  for b, (images, labels) in enumerate(batches):
    labels = np.asarray(labels)
    k = jax.random.fold_in(key, b)
    clean = np.asarray(predict(images)) == labels
    add("clean", "none", False, clean)
    for dname, dpred in defended_predict.items():
      add("clean", dname, False, np.asarray(dpred(images, jax.random.fold_in(k, 1))) == labels)
    for i, (aname, attack) in enumerate(attacks.items()):
      ka = jax.random.fold_in(k, 100 + i)
      start = time.perf_counter()
      adv, info = attack(attack_fn, params, images, labels, ka)
      attacked = np.asarray(predict(adv)) == labels
      add(aname, "none", False, attacked, info)
      if log:
        log(f"batch {b}: {aname} {time.perf_counter() - start:.0f} s, accuracy "
            f"{100 * np.mean(attacked):.1f} %")
      for j, (dname, dpred) in enumerate(defended_predict.items()):
        kd = jax.random.fold_in(ka, j)
        add(aname, dname, False, np.asarray(dpred(adv, kd)) == labels, info, clean, attacked)
        if adaptive and (adaptive_attacks is None or aname in adaptive_attacks):
          adv_ad, info_ad = attack(adaptive_models[dname], params, images, labels, kd)
          add(aname, dname, True, np.asarray(dpred(adv_ad, jax.random.fold_in(kd, 1))) == labels,
              info_ad, clean, np.asarray(predict(adv_ad)) == labels)
  return list(records.values())


def format_table(records: Iterable[Record]) -> str:
  """A Markdown table of the records (accuracy in %, destruction rate, |L2| = RMSE)."""
  lines = ["| attack | defense | adaptive | accuracy % | destruction rate | attack success % | "
           "RMSE | L-inf |", "|---|---|---|---|---|---|---|---|"]
  for r in records:
    fmt = lambda v, s="{:.3f}": "" if np.isnan(v) else s.format(v)
    lines.append(f"| {r.attack} | {r.defense} | {'BPDA+EOT' if r.adaptive else 'no'} | "
                 f"{100 * r.accuracy:.1f} | {fmt(r.destruction_rate)} | "
                 f"{fmt(100 * r.attack_success, '{:.1f}')} | {fmt(r.rmse, '{:.4f}')} | "
                 f"{fmt(r.linf, '{:.4f}')} |")
  return "\n".join(lines)
