"""jaxcomp's C++ CPU kernels (XLA FFI handlers): built once per machine, loaded, registered.

The sources live in `jaxcomp/ops/csrc/` (with the headers they share) and are
compiled on first use with the system's C++ compiler (`$CXX`, else `g++`) against
the FFI headers jaxlib ships (`jax.ffi.include_dir()`), for x86-64 CPUs with AVX2
and FMA. The shared library goes to `$JAXCOMP_KERNEL_DIR`, else
`~/.cache/jaxcomp/kernels`, named by a hash of the source, the headers, the
flags, the compiler's version and jaxlib's version, so a change of any of them
builds anew; it is written to a temporary file and renamed, so concurrent
processes (pytest -n 2) never load a half-written one.
Building takes ~5 s of one core, once.

Where a kernel cannot be had (no compiler, another CPU architecture, a failed
build, or `JAXCOMP_CPU_KERNELS=0` in the environment), `load` returns None
after one warning and the callers keep their pure-XLA formulation: same values,
slower (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import warnings

import jax

SOURCE_DIR = pathlib.Path(__file__).with_name("csrc")
DEFAULT_KERNEL_DIR = pathlib.Path("~/.cache/jaxcomp/kernels")
# -funroll-loops: 5-40 % faster per layer than without (docs/performance.md); not
# -march=native, so that a library in a shared home folder runs on any AVX2 machine.
FLAGS = ("-O3", "-funroll-loops", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread")


def _cpu_has_avx2_fma() -> bool:
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return False
  try:
    flags = pathlib.Path("/proc/cpuinfo").read_text().split()
  except OSError:  # not Linux: not used (the GEMM forms run)
    return False
  return "avx2" in flags and "fma" in flags


def _compiler_version(cxx: str) -> str:
  done = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True, timeout=60)
  return done.stdout.splitlines()[0] if done.stdout else ""


def _build(source: pathlib.Path, cxx: str) -> pathlib.Path:
  """Compiles `source` into the kernel folder (if not there yet); returns the library's path."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  headers = [h.read_bytes() for h in sorted(SOURCE_DIR.glob("*.h"))]   # shared by the sources
  key = hashlib.sha256(b"\0".join([
      source.read_bytes(), *headers, " ".join(FLAGS).encode(), _compiler_version(cxx).encode(),
      jaxlib.__version__.encode()])).hexdigest()[:16]
  folder = pathlib.Path(os.environ.get("JAXCOMP_KERNEL_DIR") or DEFAULT_KERNEL_DIR).expanduser()
  path = folder / f"{source.stem}-{key}.so"
  if path.exists():
    return path
  folder.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
  os.close(fd)
  try:
    done = subprocess.run([cxx, *FLAGS, "-I", jax.ffi.include_dir(), str(source), "-o", tmp],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
      raise RuntimeError(f"{cxx} failed on {source.name}:\n{done.stderr[-2000:]}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
  """The compiled `csrc/<name>.cc`, or None (with one warning) where it cannot be had."""
  if os.environ.get("JAXCOMP_CPU_KERNELS", "1") == "0":
    return None
  why = None
  cxx = os.environ.get("CXX") or shutil.which("g++")
  if not _cpu_has_avx2_fma():
    why = "this CPU is not x86-64 with AVX2 and FMA"
  elif cxx is None:
    why = "no C++ compiler (g++ or $CXX) was found"
  else:
    try:
      return ctypes.cdll.LoadLibrary(str(_build(SOURCE_DIR / f"{name}.cc", cxx)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
      why = f"building it failed: {err}"
  warnings.warn(f"jaxcomp: the C++ CPU kernel {name!r} is not used ({why}); the pure-XLA "
                "formulation runs instead (same values, slower)", RuntimeWarning, stacklevel=2)
  return None


@functools.cache
def register(name: str, symbol: str) -> str | None:
  """Registers `symbol` of `csrc/<name>.cc` as a CPU FFI target; its target name, or None."""
  lib = load(name)
  if lib is None:
    return None
  target = f"jaxcomp_{symbol}"
  jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return target
