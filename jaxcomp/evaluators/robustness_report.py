"""Rendering of robustness results as Markdown (the runner, `evaluators.adversarial`, computes them).

Every function takes records (`robustness.Record`) or the sweep's row dicts and
returns Markdown; nothing here runs a model.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxcomp.evaluators.robustness import Record


def _pct(v: float) -> str:
  return "" if np.isnan(v) else f"{100 * v:.1f}"


def pivot(records: Sequence[Record], defenses: Sequence[str], *, adaptive_columns: bool,
          mean_row: bool = False) -> str:
  """Accuracy % per attack (rows) and defense (columns, with BPDA+EOT beside when present)."""
  cells = {(r.attack, r.defense, r.adaptive): r for r in records}
  attack_names = list(dict.fromkeys(r.attack for r in records))
  columns = [("none", False)]
  for d in defenses:
    columns.append((d, False))
    if adaptive_columns and any(k[1] == d and k[2] for k in cells):
      columns.append((d, True))
  head = ["attack"] + [d + (" (BPDA+EOT)" if a else "") for d, a in columns]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in attack_names:
    row = [_pct(cells[name, d, a].accuracy) if (name, d, a) in cells else "" for d, a in columns]
    lines.append(f"| {name} | " + " | ".join(row) + " |")
  if mean_row:
    means = []
    for d, a in columns:
      v = [cells[n, d, a].accuracy for n in attack_names if n != "clean" and (n, d, a) in cells]
      means.append(_pct(float(np.mean(v))) if v else "")
    lines.append("| mean over attacks | " + " | ".join(means) + " |")
  return "\n".join(lines)


def destruction(records: Sequence[Record], defenses: Sequence[str]) -> str:
  """Destruction rate (Ch. 3.7) per attack and defense."""
  cells = {(r.attack, r.defense, r.adaptive): r for r in records}
  attack_names = [a for a in dict.fromkeys(r.attack for r in records) if a != "clean"]
  columns = [(d, a) for d in defenses for a in (False, True) if (attack_names[0], d, a) in cells]
  head = ["attack"] + [d + (" (BPDA+EOT)" if a else "") for d, a in columns]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in attack_names:
    row = [f"{cells[name, d, a].destruction_rate:.3f}" if (name, d, a) in cells else ""
           for d, a in columns]
    lines.append(f"| {name} | " + " | ".join(row) + " |")
  return "\n".join(lines)


def attack_stats(records: Sequence[Record]) -> str:
  """Success on the bare model and the norms each attack used."""
  lines = ["| attack | success on the bare model % | RMSE | L-inf |", "|---|---|---|---|"]
  for r in records:
    if r.defense == "none" and r.attack != "clean":
      lines.append(f"| {r.attack} | {_pct(r.attack_success)} | {r.rmse:.4f} | {r.linf:.4f} |")
  return "\n".join(lines)


def defense_table(records: Sequence[Record], groups: dict[str, list[str]], *, ablation: bool,
                  header: str) -> str:
  """The "table" (Table 4.1) or "ablation" (Tables 4.7-4.11) report.

  Args:
    records: the runner's records.
    groups: report section -> the defense names in it, in order.
    ablation: one pivot per group with the mean over attacks, no adaptive
      columns, no destruction rates.
    header: the first paragraph (checkpoint, images, time, device).
  """
  md = [header]
  for group, names in groups.items():
    md += ["", f"### Accuracy %{': ' + group if group else ''}", "",
           pivot(records, names, adaptive_columns=not ablation, mean_row=ablation)]
  if not ablation:
    every = [n for names in groups.values() for n in names]
    md += ["", "### Destruction rate (Ch. 3.7)", "", destruction(records, every),
           "", "### Attacks", "", attack_stats(records)]
  return "\n".join(md)


def sweep(rows: Sequence[dict[str, Any]], eps: Sequence[float], attack_names: Sequence[str]) -> str:
  """Per attack: rows (arm, gradient mode), columns eps in /255 units, mean +- std over seeds."""
  md = []
  arms = list(dict.fromkeys((row["arm"], row["mode"]) for row in rows))
  for name in attack_names:
    head = ["arm", "gradients", "runs", "clean"] + [f"{255 * e:.3g}/255" for e in eps]
    md += [f"### {name}: accuracy % (mean +- std over runs)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, mode in arms:
      def cell(attack, e):
        v = np.asarray([x["accuracy"] for x in rows if x["arm"] == arm and x["mode"] == mode
                        and x["attack"] == attack and np.isclose(x["eps"], e)]) * 100
        return (len(v), f"{v.mean():.2f} +- {v.std(ddof=1) if len(v) > 1 else 0:.2f}")
      runs, clean = cell("clean", 0.0)
      md.append(f"| {arm} | {mode} | {runs} | {clean} | "
                + " | ".join(cell(name, e)[1] for e in eps) + " |")
    md.append("")
  return "\n".join(md)
