"""Corruption robustness of trained classifiers: the 50 CIFAR-10-C style sets (thesis Ch. 4).

  python -m jaxcomp.main --config=configs/compressed_training.py:experiment=robustness,\
checkpoints='runs/aug/*' --workdir=runs/aug-robustness

For every finished run of `robustness.checkpoints` (workdirs; globs; "," or ";"
between them; runs without a summary.json are skipped): the accuracy on the clean
eval split of `data.name` and on `corrupted:<data.name>:<corruption>:<severity>` for
the ten corruptions x five severities (`data.num_eval_examples` images of each: the
same images, 0 for all).
A run's results are kept in its workdir (`corruption_accuracy-<digest>.json`,
keyed by the test source, the subset and the checkpoint's step), so adding runs
to a sweep evaluates only the new ones.

Runs named `<arm>_seed<k>` form an arm; of its seeds the one with the best clean
accuracy is kept (the thesis's protocol, Sec. 4.2). Over the arms: the BDA
ranking (Table 4.2), BDAD (Table 4.3) and BDADS (`corruption_scores`).
Writes `corruption_robustness.json`, `.csv` (one row per run, set) and `.md`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import pathlib
import re
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp import data as data_lib
from jaxcomp import writers
from jaxcomp.data import corruptions
from jaxcomp.evaluators import corruption_scores
from jaxcomp.evaluators.adversarial import _checkpoints
from jaxcomp.evaluators.registry import EVALUATORS
from jaxcomp.evaluators.runs import load_run

CLEAN = "clean"
NAMES = corruptions.CORRUPTIONS          # the sets `run` evaluates
SEVERITIES = tuple(corruptions.SEVERITIES)


@functools.partial(jax.jit, static_argnums=0)
def _correct(apply_fn: Callable[[Any, jax.Array], jax.Array], variables: Any,
             batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  logits = apply_fn(variables, batch["image"].astype(jnp.float32) / 255.0)
  hits = (jnp.argmax(logits, -1) == batch["label"]) & batch["mask"]
  return hits.sum(), batch["mask"].sum()


def accuracy(apply_fn: Callable[[Any, jax.Array], jax.Array], variables: Any,
             ds: data_lib.ImageDataset, *, batch_size: int) -> float:
  """Top-1 accuracy of `apply_fn(variables, images in [0, 1]) -> logits` over a dataset.

  `apply_fn` must be hashable (a task's bound method is): one compilation serves
  every dataset of a shape.
  """
  totals = np.zeros(2)
  for batch in data_lib.eval_batches(ds, batch_size=batch_size, num_threads=0):
    totals += np.asarray(jax.device_get(_correct(apply_fn, variables, batch)), np.float64)
  return float(totals[0] / max(totals[1], 1))


def _named(data_config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(data_config.to_dict())
  c.name = name
  return c


def corrupted_sets(data_config: ml_collections.ConfigDict, *, names: Sequence[str] = NAMES,
                   severities: Iterable[int] = SEVERITIES
                   ) -> dict[str | tuple[str, int], data_lib.ImageDataset]:
  """The clean eval split of `data_config.name` and its corrupted copies (built on first use).

  Returns:
    {"clean": dataset, (corruption, severity): dataset, ...}.
  """
  split = data_config.eval_split
  sets = {CLEAN: data_lib.get_dataset(data_config, split)}
  for name in names:
    for s in severities:
      sets[(name, s)] = data_lib.get_dataset(
          _named(data_config, f"corrupted:{data_config.name}:{name}:{s}"), split)
  return sets


def evaluate_run(workdir: str | pathlib.Path, data_config: ml_collections.ConfigDict, *,
                 names: Sequence[str] = NAMES, severities: Iterable[int] = SEVERITIES,
                 batch_size: int = 500) -> dict[str | tuple[str, int], float]:
  """Accuracy of a trained run on the clean and the corrupted test sets (cached in its workdir).

  Args:
    workdir: a finished classification run.
    data_config: `config.data` naming the clean test source (`name`, `eval_split`,
      `num_eval_examples`, `cache_dir`).
    names, severities: the corruptions evaluated.
    batch_size: evaluation batch.

  Returns:
    {"clean": accuracy, (corruption, severity): accuracy, ...}.
  """
  task, variables = load_run(workdir)
  step = json.loads((pathlib.Path(workdir) / "summary.json").read_text()).get(
      "final_step") if (pathlib.Path(workdir) / "summary.json").is_file() else None
  key = f"{data_config.name}|{data_config.eval_split}|{data_config.num_eval_examples}|{step}"
  cache = pathlib.Path(workdir) / (
      f"corruption_accuracy-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json")
  done = json.loads(cache.read_text())["accuracy"] if cache.is_file() else {}
  wanted = [CLEAN] + [f"{n}:{s}" for n in names for s in severities]
  if not all(k in done for k in wanted):
    sets = corrupted_sets(data_config, names=names, severities=severities)
    for label, ds in sets.items():
      k = label if label == CLEAN else f"{label[0]}:{label[1]}"
      if k not in done:
        done[k] = accuracy(task.apply_fn, variables, ds, batch_size=batch_size)
    writers.write_json(cache, {"key": key, "accuracy": done})
  return {(k if k == CLEAN else (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))): done[k]
          for k in wanted}


def arm_of(run: str) -> tuple[str, int | None]:
  """`"<arm>_seed<k>"` or `"<arm>_seed=<k>"` (launch/sweep.py's names) -> (arm, k); any
  other name is an arm of one unnamed seed."""
  m = re.fullmatch(r"(.*)_seed=?(\d+)", run)
  return (m.group(1), int(m.group(2))) if m else (run, None)


def best_seeds(results: Mapping[str, Mapping]) -> dict[str, str]:
  """{arm: the run of the arm with the best clean accuracy} (first listed on ties)."""
  best: dict[str, str] = {}
  for run, acc in results.items():
    arm = arm_of(run)[0]
    if arm not in best or acc[CLEAN] > results[best[arm]][CLEAN]:
      best[arm] = run
  return best


def scores(results: Mapping[str, Mapping]) -> dict[str, Any]:
  """BDA ranking, BDAD and BDADS over the arms (best seed each), and their clean accuracies."""
  best = best_seeds(results)
  grid = {(arm, c, s): results[run][(c, s)]
          for arm, run in best.items() for (c, s) in (k for k in results[run] if k != CLEAN)}
  out: dict[str, Any] = {"best_seed": best,
                         "clean": {arm: results[run][CLEAN] for arm, run in best.items()}}
  if grid:
    out["ranking"] = [list(c) for c in corruption_scores.ranking(grid)]
    out["bdad"] = {c: list(v) for c, v in corruption_scores.bdad(grid).items()}
    out["bdads"] = {f"{c}:{s}": list(v) for (c, s), v in corruption_scores.bdads(grid).items()}
  return out


def to_csv(results: Mapping[str, Mapping]) -> str:
  """One row per (run, set): run, arm, seed, corruption ("clean" for the clean set), severity,
  accuracy."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["run", "arm", "seed", "corruption", "severity", "accuracy"])
  for run, acc in results.items():
    arm, seed = arm_of(run)
    for k, v in acc.items():
      c, s = (CLEAN, "") if k == CLEAN else k
      w.writerow([run, arm, "" if seed is None else seed, c, s, f"{v:.6f}"])
  return buf.getvalue()


def to_markdown(results: Mapping[str, Mapping], summary: Mapping[str, Any]) -> str:
  """Per arm (its best seed): clean and mean corrupt accuracy and the mean per corruption;
  then the BDA ranking and the BDAD choices."""
  best = summary["best_seed"]
  names = list(dict.fromkeys(c for acc in results.values() for c, _ in
                             (k for k in acc if k != CLEAN)))
  lines = ["| arm (best seed) | clean | corrupt (mean) | " + " | ".join(names) + " |",
           "|---" * (3 + len(names)) + "|"]
  for arm, run in best.items():
    acc = results[run]
    per = [np.mean([v for k, v in acc.items() if k != CLEAN and k[0] == c]) for c in names]
    corrupt = np.mean([v for k, v in acc.items() if k != CLEAN])
    lines.append(f"| {run} | {100 * acc[CLEAN]:.2f} | {100 * corrupt:.2f} | "
                 + " | ".join(f"{100 * p:.2f}" for p in per) + " |")
  if "ranking" in summary:
    lines += ["", "BDA ranking (best first): " + ", ".join(
        f"{m} ({100 * a:.2f})" for m, a in summary["ranking"]),
              "", "| corruption | BDAD choice | mean accuracy |", "|---|---|---|"]
    lines += [f"| {c} | {m} | {100 * a:.2f} |" for c, (m, a) in summary["bdad"].items()]
  return "\n".join(lines) + "\n"


@EVALUATORS.register("corruption_robustness")
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates `robustness.checkpoints` on the 50 corrupted sets of `data.name`; writes
  corruption_robustness.json / .csv / .md to `workdir`; returns the report."""
  runs = _checkpoints(config.robustness.checkpoints)
  if len({p.name for p in runs}) != len(runs):
    raise ValueError("robustness.checkpoints: two runs share a directory name "
                     f"({sorted(p.name for p in runs)}); arms are named by it")
  results = {}
  for path in runs:
    if not (path / "summary.json").is_file():
      print(f"[corruption_robustness] skip {path}: not finished", file=sys.stderr, flush=True)
      continue
    print(f"[corruption_robustness] {path}", file=sys.stderr, flush=True)
    results[path.name] = evaluate_run(path, config.data, names=NAMES, severities=SEVERITIES,
                                      batch_size=config.eval.batch_size)
  summary = scores(results)
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  report = {"data": config.data.name, "num_eval_examples": config.data.num_eval_examples,
            "runs": {r: {(k if k == CLEAN else f"{k[0]}:{k[1]}"): v for k, v in acc.items()}
                     for r, acc in results.items()}, **summary}
  writers.write_json(out / "corruption_robustness.json", report)
  writers.write_atomic(out / "corruption_robustness.csv", to_csv(results))
  md = to_markdown(results, summary)
  writers.write_atomic(out / "corruption_robustness.md",
                       f"## Corruption robustness on {config.data.name}\n\n{md}")
  print(md)
  return report
