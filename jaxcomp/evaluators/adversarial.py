"""Adversarial evaluation of trained classifiers (SPEC Sec. 8-9; `JPEG_DL.md`'s protocol).

  python -m jaxcomp.main --config=configs/adversarial.py:checkpoints=RUN --workdir=OUT
  python -m jaxcomp.main --config=configs/adversarial.py:report=ablation,checkpoints=RUN --workdir=OUT
  python -m jaxcomp.main --config=configs/adversarial.py:report=jpeg_dl,checkpoints='ROOT/*_seed*' \
      --workdir=OUT

Reports (`robustness.report`):

* "table" (thesis Table 4.1): on `num_examples` test images that the first
  checkpoint classifies correctly, accuracy under every attack without defense
  and with every defense, non-adaptive (the attack sees the bare classifier,
  the defense is applied to its output) and adaptive (BPDA + EOT through the
  defense) side by side; destruction rates (Ch. 3.7); clean accuracy with each
  defense; attack success and the norms the attacks used.
* "ablation" (Tables 4.7-4.11): the same cells, non-adaptive, one pivot table
  per defense group (combinations, thresholding, deflections, windows) with the
  mean over the attacks (Table 4.11's summary).
* "jpeg_dl" (`JPEG_DL.md`): accuracy under each attack over the `eps` sweep on
  the test split, for every checkpoint. A model with a JPEG-DL layer is attacked
  twice: with gradients through the soft quantizer ("soft") and with the layer
  replaced by the identity on the backward pass ("bpda"). Arms (workdir names
  without `_seed<k>`) are averaged over seeds.

A defense is a pipeline of registered stages (`stages="pd+wd"`,
`jaxcomp.defenses.DEFENSE_STAGES`): "jpeg" (`jpeg_defense`), "pd"
(`pixel_deflection`, guided by the model's R-CAM unless `rcam=False`), "wd"
(`denoise_wavelet`, clipped to [0, 1]), ...; `votes=N` scores it by the majority
of N draws (Ens-10). Attacks are `jaxcomp.attacks.ATTACKS` by name; reports are
`REPORTS` by name. This module runs; `robustness_report` renders the Markdown.
Writes `robustness.json` and `robustness.md` to the workdir.
"""

from __future__ import annotations

import functools
import glob
import inspect
import json
import pathlib
import re
import sys
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp import attacks as attacks_lib
from jaxcomp import defenses as defenses_lib
from jaxcomp import writers
from jaxcomp.config_lib import ConfigError
from jaxcomp.evaluators import robustness, robustness_report
from jaxcomp.evaluators.registry import EVALUATORS
from jaxcomp.evaluators.runs import load_run
from jaxcomp.registry import Registry
from jaxcomp.tasks.classification import ClassificationTask

_INIT_ONLY = ("init", "sensitivity_checkpoint", "sensitivity_images", "quality",
              "quality_divisor", "q_max", "sensitivity_bn", "step_floor", "lsq_grad_scale")
_DEFENSE_META = ("stages", "group", "votes", "order")

# report name -> (config) -> (report dict, Markdown).
REPORTS: Registry[Callable[[ml_collections.ConfigDict], tuple[dict, str]]] = Registry(
    "robustness report")


def ordered(section: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
  """(name, spec) pairs sorted by their `order` entry, then name (ConfigDicts sort keys)."""
  return sorted(section.items(), key=lambda kv: (kv[1].get("order", 0), kv[0]))


def build_attack(name: str, spec: Mapping[str, Any]) -> robustness.Attack:
  """`attack(apply_fn, params, images, labels, key)` from `{method, order, **keyword arguments}`.

  Raises:
    ConfigError: unknown method or an argument the method does not take.
  """
  spec = dict(spec)
  spec.pop("order", None)
  method = spec.pop("method", None)
  if method not in attacks_lib.ATTACKS:
    raise ConfigError(f"robustness.attacks.{name}.method={method!r} is not one of "
                      f"{attacks_lib.ATTACKS.names()}")
  fn = attacks_lib.ATTACKS.get(method)
  params = inspect.signature(fn).parameters
  allowed = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"target_labels"}
  unknown = sorted(set(spec) - allowed)
  if unknown:
    raise ConfigError(f"robustness.attacks.{name}: {method} takes no {unknown}; "
                      f"it takes {sorted(allowed)}")
  return functools.partial(fn, **spec)


def build_defense(name: str, spec: Mapping[str, Any],
                  rcam_fn: Callable[[jax.Array], jax.Array] | None = None
                  ) -> tuple[robustness.Defense, dict[str, Any]]:
  """`defense(images, key) -> images` from `{stages, group, votes, **stage arguments}`.

  Args:
    name: the defense's name (for error messages).
    spec: `stages` ("+"-joined registered stages, applied left to right),
      `group` (report section), `votes` (0: one draw; N: majority of N draws),
      `order` (position in the report) and the stages' arguments.
    rcam_fn: `images [B, H, W, 3] -> R-CAM [B, H, W]` of the defended model,
      for stages that use it ("pd" unless `rcam=False`).

  Returns:
    The defense and its metadata `{"group", "votes", "random"}`.

  Raises:
    ConfigError: unknown stage or argument.
  """
  spec = dict(spec)
  names = str(spec.get("stages", "")).split("+")
  bad = [s for s in names if s not in defenses_lib.DEFENSE_STAGES]
  if bad:
    raise ConfigError(f"robustness.defenses.{name}.stages: unknown stage(s) {bad}; "
                      f"known: {defenses_lib.DEFENSE_STAGES.names()} joined by '+'")
  stages = [defenses_lib.DEFENSE_STAGES.get(s) for s in names]
  meta = {"group": str(spec.get("group", "")), "votes": int(spec.get("votes", 0)),
          "random": any(s.random for s in stages)}
  arguments = {k: v for k, v in spec.items() if k not in _DEFENSE_META}
  unknown = sorted(set(arguments) - {a for s in stages for a in s.args})
  if unknown:
    raise ConfigError(f"robustness.defenses.{name}: stages {names} take no {unknown}")
  context = {"rcam_fn": rcam_fn}
  try:
    fns = [s.make(context, **{k: v for k, v in arguments.items() if k in s.args})
           for s in stages]
  except ValueError as e:
    raise ValueError(f"defense {name!r}: {e}") from None

  def defense(images: jax.Array, key: jax.Array) -> jax.Array:
    x = images
    for i, fn in enumerate(fns):
      x = fn(x, jax.random.fold_in(key, i))
    return x

  return defense, meta


def jpeg_layer_bpda(task: ClassificationTask) -> attacks_lib.Stochastic:
  """The classifier with its JPEG-DL layer replaced by the identity on the backward pass.

  `model(variables, x, key)` equals `task.apply_fn(variables, x)` forward; its
  input gradient is the backbone's gradient at the layer's output (BPDA,
  Athalye et al. 2018). The variables are an argument, so one model serves
  every run of the same architecture (one compilation per attack).
  """
  if task.model.jpeg_layer is None:
    raise ValueError("the model has no JPEG layer to approximate")
  backbone = task.model.clone(jpeg_layer=None)
  layer = task.model.jpeg_layer

  def fn(variables: Any, images: jax.Array, key: jax.Array) -> jax.Array:
    layer_variables = {"params": variables["params"]["jpeg_layer"]}
    through = attacks_lib.bpda(lambda x, k: layer.apply(layer_variables, x))
    return backbone.apply(variables, through(images, key), train=False)[0]

  return attacks_lib.Stochastic(fn)


def evaluation_batches(task: ClassificationTask, variables: Any, *, num_examples: int,
                       only_correct: bool, batch_size: int, seed: int
                       ) -> list[tuple[jax.Array, np.ndarray]]:
  """(images [b, H, W, C] float32 in [0, 1], labels [b]) batches of the run's test split.

  `num_examples` > 0 draws that many at random (seeded; among the correctly
  classified ones when `only_correct`); 0 keeps the whole split in order.
  """
  ds = task.eval_ds
  images, labels = ds.read(np.arange(len(ds)))
  order = (np.random.default_rng(seed).permutation(len(ds)) if num_examples
           else np.arange(len(ds)))
  if only_correct:
    predict = jax.jit(lambda x: jnp.argmax(task.apply_fn(variables, x), -1))
    preds = np.concatenate([np.asarray(predict(np.asarray(images[i:i + batch_size],
                                                          np.float32) / 255.0))
                            for i in range(0, len(ds), batch_size)])
    order = order[preds[order] == labels[order]]
  if num_examples:
    order = order[:num_examples]
  x = images[order].astype(np.float32) / 255.0
  y = labels[order].astype(np.int32)
  return [(jnp.asarray(x[i:i + batch_size]), y[i:i + batch_size])
          for i in range(0, len(order), batch_size)]


def _checkpoints(spec: str) -> list[pathlib.Path]:
  paths = []
  for item in filter(None, (s.strip() for s in re.split(r"[,;]", spec))):
    hits = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
    if not hits:
      raise FileNotFoundError(f"robustness.checkpoints: nothing matches {item!r}")
    paths += [pathlib.Path(h) for h in hits]
  if not paths:
    raise ConfigError("robustness.checkpoints is empty: give the workdir(s) of trained runs")
  return paths


def _log(message: str) -> None:
  print(f"[robustness] {message}", file=sys.stderr, flush=True)


def _defense_table(config: ml_collections.ConfigDict, ablation: bool = False) -> tuple[dict, str]:
  r = config.robustness
  attacks = {n: build_attack(n, s) for n, s in ordered(r.attacks)}
  if not attacks:
    raise ConfigError("robustness.attacks is empty")
  path = _checkpoints(r.checkpoints)[0]
  task, variables = load_run(path)
  features = lambda v, x: task.model.apply(v, x, train=False)
  rcam_fn = lambda x: defenses_lib.rcam_from_model(features, variables, x)
  built = {n: build_defense(n, s, rcam_fn) for n, s in ordered(r.defenses)}
  batches = evaluation_batches(task, variables, num_examples=r.num_examples,
                               only_correct=r.only_correct, batch_size=r.batch_size,
                               seed=config.seed)
  count = sum(len(y) for _, y in batches)
  _log(f"{path}: {count} test images, {len(attacks)} attacks, {len(built)} defenses")
  start = time.perf_counter()
  records = robustness.evaluate(
      task.apply_fn, variables, batches, attacks=attacks,
      defenses={n: d for n, (d, _) in built.items()}, key=jax.random.key(config.seed),
      adaptive=r.adaptive and not ablation, adaptive_attacks=tuple(r.adaptive_attacks) or None,
      eot_samples={n: r.eot_samples if m["random"] else 1 for n, (_, m) in built.items()},
      vote_draws={n: m["votes"] or None for n, (_, m) in built.items()}, log=_log)
  seconds = time.perf_counter() - start
  _log(f"done in {seconds:.0f} s")
  which = ", all classified correctly by the model" if r.only_correct else ""
  header = (f"Checkpoint `{path}`: {count} images of `{task.eval_ds.name}` "
            f"({task.eval_ds.split}){which}, seed {config.seed}; {seconds:.0f} s on "
            f"{jax.devices()[0].device_kind}.")
  groups: dict[str, list[str]] = {}
  for n, (_, m) in built.items():
    groups.setdefault(m["group"], []).append(n)
  md = robustness_report.defense_table(records, groups, ablation=ablation, header=header)
  report = {"checkpoint": str(path), "images": count, "seconds": seconds,
            "records": [_record_dict(x) for x in records]}
  return report, md


REPORTS.register("table", _defense_table)
REPORTS.register("ablation", functools.partial(_defense_table, ablation=True))


def _record_dict(r: robustness.Record) -> dict[str, Any]:
  return {"attack": r.attack, "defense": r.defense, "adaptive": r.adaptive, "count": r.count,
          "accuracy": r.accuracy, "destruction_rate": r.destruction_rate,
          "attack_success": r.attack_success, "rmse": r.rmse, "linf": r.linf}


def _jpeg_dl_sweep(config: ml_collections.ConfigDict) -> tuple[dict, str]:
  r = config.robustness
  if not r.eps:
    raise ConfigError("robustness.eps is empty: report=jpeg_dl sweeps these L-inf budgets")
  base = {n: build_attack(n, s) for n, s in ordered(r.attacks)}
  if not base:
    raise ConfigError("robustness.attacks is empty")
  attacks = {f"{n}@{eps:.6g}": functools.partial(a, eps=float(eps))
             for n, a in base.items() for eps in r.eps}
  rows = []
  models: dict[str, tuple[Callable, dict[str, Any]]] = {}  # one per architecture
  for path in _checkpoints(r.checkpoints):
    task, variables = load_run(path)
    if task.config.model.jpeg_layer:
      task.log_jpeg_diagnostic(variables["params"])
    batches = evaluation_batches(task, variables, num_examples=r.num_examples,
                                 only_correct=r.only_correct, batch_size=r.batch_size,
                                 seed=config.seed)
    arch = task.config.model.to_dict()
    for key in _INIT_ONLY:  # how the tables were initialised does not change the model
      arch["jpeg"].pop(key, None)
    arch = json.dumps(arch, sort_keys=True)
    if arch not in models:
      modes = {"soft": None}
      if task.model.jpeg_layer is not None:
        modes["bpda"] = jpeg_layer_bpda(task)
      models[arch] = (task.apply_fn, modes)
    apply_fn, modes = models[arch]
    arm = re.sub(r"_seed\d+$", "", path.name)
    for mode, attack_fn in modes.items():
      start = time.perf_counter()
      records = robustness.evaluate(apply_fn, variables, batches, attacks=attacks,
                                    defenses={}, key=jax.random.key(config.seed),
                                    adaptive=False, attack_fn=attack_fn)
      _log(f"{path} ({mode}): {time.perf_counter() - start:.0f} s")
      for rec in records:
        name, _, eps = rec.attack.partition("@")
        rows.append({"run": str(path), "arm": arm, "mode": mode, "attack": name,
                     "eps": float(eps) if eps else 0.0, "accuracy": rec.accuracy,
                     "count": rec.count})
  return {"rows": rows}, robustness_report.sweep(rows, [float(e) for e in r.eps], list(base))


REPORTS.register("jpeg_dl", _jpeg_dl_sweep)


@EVALUATORS.register("robustness")
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.robustness.report`; writes robustness.json / .md; returns the report."""
  r = config.robustness
  report, md = REPORTS.get(r.report)(config)
  report = {"report": r.report, "config": config.to_dict(), **report}
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  writers.write_json(out / "robustness.json", report)
  writers.write_atomic(out / "robustness.md", f"## Robustness: {r.report}\n\n{md}\n")
  print(md)
  return report
