"""The machine's load average, printed before and after every benchmark.

Figures for the README come from an idle machine only (load average well
under 1 on 2 cores); a benchmark's output says how idle it was.
"""

from __future__ import annotations


def loadavg() -> str:
  """The 1, 5 and 15 minute load averages from /proc/loadavg ("n/a" off Linux)."""
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return "n/a"
