"""jaxcomp.cpu_allocator: glibc keeps freed blocks, so large temporaries stop page-faulting."""

import subprocess
import sys

import pytest

from jaxcomp import config_lib, cpu_allocator

# Allocates, touches and frees a 96 MiB buffer 10 times, on the main thread or on a
# worker thread (a per-thread arena's heap holds at most 64 MiB); prints the minor page
# faults of the last 9 (the first one pays for its pages in any case).
_PROBE = """
import resource, sys, threading
import numpy as np
if sys.argv[1] != "default":
  from jaxcomp import cpu_allocator
  arenas = {"keep": cpu_allocator.ARENA_MAX, "thresholds_only": 8}[sys.argv[1]]
  assert cpu_allocator.keep_freed_memory(arena_max=arenas)
def touch():
  a = np.empty(24 * 2 ** 20, np.float32); a.fill(1.0); return float(a[-1])
def run(fn):
  if sys.argv[2] == "worker":
    t = threading.Thread(target=fn); t.start(); t.join()
  else:
    fn()
def nine():
  for _ in range(9):
    touch()
run(touch)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run(nine)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str, thread: str = "main") -> int:
  out = subprocess.run([sys.executable, "-c", _PROBE, setting, thread], check=True, text=True,
                       capture_output=True).stdout
  return int(out.strip().splitlines()[-1])


def test_keep_freed_memory_stops_refaulting_large_blocks():
  if cpu_allocator._mallopt() is None:
    pytest.skip("this C library has no mallopt (not glibc)")
  default, kept = _faults("default"), _faults("keep")
  # glibc's defaults unmap the 96 MiB block on free, so every touch faults its pages in
  # again (5,040 faults for the 9 here: the kernel maps much of it as 2 MiB huge pages);
  # kept, the block is reused (0 here).
  assert default >= 9 * 100, default
  assert kept < default / 20, (kept, default)


def test_one_arena_keeps_blocks_freed_on_worker_threads():
  if cpu_allocator._mallopt() is None:
    pytest.skip("this C library has no mallopt (not glibc)")
  # On a worker thread the thresholds alone do not help: its arena's heap holds at most
  # 64 MiB, so the block is mmap-ed anew (442 faults for the 9 here); one arena: 1-5.
  thresholds_only, kept = _faults("thresholds_only", "worker"), _faults("keep", "worker")
  assert thresholds_only >= 9 * 20, thresholds_only
  assert kept < thresholds_only / 20, (kept, thresholds_only)


@pytest.mark.parametrize("kw", [dict(mmap_threshold=0), dict(trim_threshold=2 ** 31),
                                dict(mmap_threshold=-5), dict(arena_max=0)])
def test_keep_freed_memory_rejects_values_mallopt_cannot_take(kw):
  with pytest.raises(ValueError, match="C int"):
    cpu_allocator.keep_freed_memory(**kw)


def test_config_turns_it_on_by_default():
  assert config_lib.base_config().keep_freed_memory is True
