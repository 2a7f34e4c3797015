"""Where one compiled step's time goes on this device: XLA's thunks summed per call.

  python benchmarks/profile_step.py jpeg_layer 16x224
  python benchmarks/profile_step.py defense 64x224
  python benchmarks/profile_step.py resnet20_train 128
  python benchmarks/profile_step.py pgd20 128 --top 40

Builds the `workloads.<name>` step (the jaxcomp side of the comparison benchmarks),
runs it `--warmup` times, then traces `--calls` calls with `jax.profiler`
(a Perfetto trace, no TensorBoard needed) and prints, per call:
  * the minor page faults and system time (`getrusage`: a step that page-faults its
    temporaries in anew shows it here, docs/performance.md);
  * time per kind of thunk (the fusion name's stem; YNNPACK fusions by the root
    instruction of their computation in the compiled HLO: convolution, dot, reduce);
  * the `--top` thunks, with how many times each ran per call (loop bodies run
    many times; a `while` thunk's time includes its body's, so it is listed there
    but not added into the totals).
The method behind docs/performance.md's profiles. Like every benchmark, it sets the
allocator and XLA:CPU flags (`machine_load.SETTINGS`) and prints the load average.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import resource
import tempfile

import jax

import workloads  # benchmarks/workloads.py, beside this file
from machine_load import SETTINGS, loadavg

_LOOPS = ("while", "conditional", "call")
_SKIP = ("Thunk", "profiler", "contextlib", "$", "Pjit", "Execute", "Slinky", "end: ")


def root_ops(hlo: str) -> dict[str, str]:
  """{fusion instruction name: its fused computation's root opcode} of an HLO module."""
  roots, current = {}, None
  for line in hlo.splitlines():
    head = re.match(r"^%?([\w.\-]+) \(.*\) -> .*\{$", line)
    if head:
      current = head.group(1)
    elif current and line.strip().startswith("ROOT"):
      op = re.search(r"= \S+ ([\w\-]+)\(", line)
      roots[current], current = (op.group(1) if op else "?"), None
  calls = re.findall(r"%([\w.\-]+) = [^\n]*? fusion\([^\n]*?calls=%([\w.\-]+)", hlo)
  return {name: roots.get(comp, "?") for name, comp in calls}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("workload", choices=["jpeg_layer", "defense", "resnet20_train", "pgd20",
                                      "hyperprior_train"])
  p.add_argument("size", help="BxS for jpeg_layer / defense (16x224), B for the others")
  p.add_argument("--calls", type=int, default=5)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--top", type=int, default=25)
  a = p.parse_args()

  captured = {}
  compile_ = workloads._compile                  # keep the compiled program's HLO text

  def capture(fn, *args):
    compiled, seconds, cost = compile_(fn, *args)
    captured["hlo"] = compiled.as_text()
    return compiled, seconds, cost

  workloads._compile = capture
  dims = [int(v) for v in a.size.split("x")]
  work = getattr(workloads, a.workload)(*dims)
  kinds = root_ops(captured["hlo"])
  print(f"{work.name}: jax {jax.__version__} on {jax.default_backend()}, loadavg before "
        f"{loadavg()}; {SETTINGS}")
  for _ in range(a.warmup):
    work.step()
  with tempfile.TemporaryDirectory() as tmp:
    before = resource.getrusage(resource.RUSAGE_SELF)
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(a.calls):
        work.step()
    after = resource.getrusage(resource.RUSAGE_SELF)
    trace = next(pathlib.Path(tmp).rglob("*.json.gz"))
    events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not any(s in e["name"] for s in _SKIP):
      total[e["name"]] += e.get("dur", 0) / 1e3 / a.calls       # ms per call
      count[e["name"]] += 1 / a.calls
  by_kind = collections.Counter()
  loops = {n for n in total if n.startswith(_LOOPS)}      # their time includes their bodies'
  for name, ms in total.items():
    if name in loops:
      continue
    stem = name.split(".")[0]
    by_kind[f"{stem} ({kinds[name]})" if stem == "ynn_fusion" and name in kinds else stem] += ms
  print(f"per call: {(after.ru_minflt - before.ru_minflt) / a.calls:.0f} minor page faults, "
        f"{(after.ru_stime - before.ru_stime) / a.calls * 1e3:.1f} ms system time, "
        f"{sum(v for n, v in total.items() if n not in loops):.1f} ms in thunks (two threads "
        "add up; loops not counted twice)")
  print("\nby kind (ms per call):")
  for kind, ms in by_kind.most_common():
    if ms >= 0.05:
      print(f"  {ms:9.2f}  {kind}")
  print(f"\ntop {a.top} thunks (ms per call, runs per call):")
  for name, ms in total.most_common(a.top):
    print(f"  {ms:9.2f}  x{count[name]:6.1f}  {name}")
  print(f"loadavg after {loadavg()}")


if __name__ == "__main__":
  main()
