"""Accuracy and compression ratio of every selector and every fixed version (paper 003).

Top-k accuracy counts an image as correct when its true label ranks < k in the
chosen version (`label_ranks`, `jax.lax.top_k`'s tie order). The compression
ratio is CR = total original bits / total selected bits over the whole set
(the paper's definition), once with whole-file sizes and once with payload-only
(entropy-coded) sizes; totals are summed on the host in int64.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from jaxcomp.selection import selectors
from jaxcomp.selection.versions import check_qualities

SELECTORS = ("hrs", "keep_top1", "keep_top5", "keep_both")


def selection_report(logits: np.ndarray, labels: np.ndarray, sizes_file: np.ndarray,
                     sizes_payload: np.ndarray, qualities: Sequence[int]
                     ) -> dict[str, dict[str, float]]:
  """Top-1 / top-5 accuracy and CR of each selector and each fixed version.

  HRS and the label-free selectors break ties by the whole-file size
  (`sizes_file`); the same selection is then measured in both size units.

  Args:
    logits: float [V, B, K], K >= 5; version 0 is the original.
    labels: int [B] in [0, K).
    sizes_file: int [V, B] whole-file bytes (> 0).
    sizes_payload: int [V, B] payload bytes (> 0).
    qualities: the JPEG qualities of versions 1..V-1 (names the rows).

  Returns:
    Rows in order "original", "q<Q>" for each quality, then "hrs", "keep_top1",
    "keep_top5", "keep_both"; each {"top1", "top5"} (fractions in [0, 1]) and
    {"cr_file", "cr_payload"} (original / selected total; 1.0 for the original).
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
  sizes_file, sizes_payload = np.asarray(sizes_file), np.asarray(sizes_payload)
  qs = check_qualities(qualities)
  if logits.ndim != 3 or logits.shape[0] != len(qs) + 1:
    raise ValueError(f"logits must be [V, B, K] with V = 1 + len(qualities) = {len(qs) + 1}, "
                     f"got shape {logits.shape}")
  if logits.shape[-1] < 5:
    raise ValueError(f"top-5 accuracy needs K >= 5 classes, got {logits.shape[-1]}")
  for name, s in (("sizes_file", sizes_file), ("sizes_payload", sizes_payload)):
    if s.shape != logits.shape[:2] or not np.issubdtype(s.dtype, np.integer) or np.any(s <= 0):
      raise ValueError(f"{name} must be positive integers [V, B] = {logits.shape[:2]}, "
                       f"got {s.dtype} {s.shape}")
  if (labels.shape != logits.shape[1:2] or not np.issubdtype(labels.dtype, np.integer)
      or np.any(labels < 0) or np.any(labels >= logits.shape[-1])):
    raise ValueError(f"labels must be integers [B] = {logits.shape[1:2]} in [0, "
                     f"{logits.shape[-1]}), got {labels.dtype} {labels.shape}")

  ranks = np.asarray(jax.jit(selectors.label_ranks)(logits, labels))
  picks = {f"q{q}" if i else "original": np.full(labels.shape, i, np.int32)
           for i, q in enumerate((None,) + qs)}
  picks["hrs"] = jax.jit(selectors.highest_rank_select)(logits, labels, sizes_file)
  for name in SELECTORS[1:]:
    picks[name] = jax.jit(getattr(selectors, name))(logits, sizes_file)

  totals = {"file": sizes_file[0].sum(dtype=np.int64),
            "payload": sizes_payload[0].sum(dtype=np.int64)}
  report = {}
  for name, pick in picks.items():
    pick = np.asarray(pick)[None]
    rank = np.take_along_axis(ranks, pick, 0)[0]
    report[name] = {
        "top1": float(np.mean(rank < 1)),
        "top5": float(np.mean(rank < 5)),
        "cr_file": float(totals["file"]
                         / np.take_along_axis(sizes_file, pick, 0).sum(dtype=np.int64)),
        "cr_payload": float(totals["payload"]
                            / np.take_along_axis(sizes_payload, pick, 0).sum(dtype=np.int64)),
    }
  return report


def report_markdown(report: dict[str, dict[str, float]]) -> str:
  """A markdown table of `selection_report`'s rows: accuracies (%), top-1 gain, CRs."""
  base = report["original"]["top1"]
  lines = ["| input | top-1 (%) | top-5 (%) | top-1 gain (pp) | CR file | CR payload |",
           "|---|---:|---:|---:|---:|---:|"]
  for name, r in report.items():
    lines.append(f"| {name} | {100 * r['top1']:.2f} | {100 * r['top5']:.2f} | "
                 f"{100 * (r['top1'] - base):+.2f} | {r['cr_file']:.2f} | {r['cr_payload']:.2f} |")
  return "\n".join(lines)
