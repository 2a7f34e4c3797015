"""jaxcomp.cpu_allocator: glibc keeps freed blocks, so large temporaries stop page-faulting."""

import subprocess
import sys

import pytest

from jaxcomp import config_lib, cpu_allocator

# Allocates, touches and frees a 64 MiB buffer 10 times; prints the minor page faults
# of the last 9 (the first one pays for its pages in any case).
_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
  from jaxcomp import cpu_allocator
  assert cpu_allocator.keep_freed_memory()
def touch():
  a = np.empty(16 * 2 ** 20, np.float32); a.fill(1.0); return float(a[-1])
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
  touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> int:
  out = subprocess.run([sys.executable, "-c", _PROBE, setting], check=True, text=True,
                       capture_output=True).stdout
  return int(out.strip().splitlines()[-1])


def test_keep_freed_memory_stops_refaulting_large_blocks():
  if cpu_allocator._mallopt() is None:
    pytest.skip("this C library has no mallopt (not glibc)")
  default, kept = _faults("default"), _faults("keep")
  # glibc's defaults unmap the 64 MiB block on free, so every touch faults its pages in
  # again (4,896 faults for the 9 here: the kernel maps much of it as 2 MiB huge pages);
  # kept, the block is reused (0 here).
  assert default >= 9 * 100, default
  assert kept < default / 20, (kept, default)


@pytest.mark.parametrize("kw", [dict(mmap_threshold=0), dict(trim_threshold=2 ** 31),
                                dict(mmap_threshold=-5)])
def test_keep_freed_memory_rejects_values_mallopt_cannot_take(kw):
  with pytest.raises(ValueError, match="C int"):
    cpu_allocator.keep_freed_memory(**kw)


def test_config_turns_it_on_by_default():
  assert config_lib.base_config().keep_freed_memory is True
