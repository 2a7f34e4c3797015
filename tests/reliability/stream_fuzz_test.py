"""Fuzzing the decoder with forged streams: 300+ mutations, each with a valid CRC-32.

The container's checksum stops blind corruption (tests/codecs/bitstream_test.py);
here every mutated stream carries a recomputed checksum, so only the decoder's
own checks stand between it and the data: the header against the model, the
image-size limit, the minimum payload length, and exact payload consumption.

The decoding runs in a child process under a watchdog: an address-space limit
(`RLIMIT_AS`, 3 GiB: a decoder that tried to allocate for a forged size would
die there) and a per-case alarm (60 s). Each case must end in a one-line
`StreamError` or, for mutations that leave a valid stream (another shipped
model's name, a size with the same latent shape), in an image of the size the
header states. Run this file as a script to print the summary.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 3 * 2 ** 30       # address space of the decoding process
CASE_SECONDS = 60                # alarm per decoded stream (the slowest took 16 s at load 37)
# The layout of bitstream.py's docstring, written out independently here.
FIELDS = struct.Struct("<BBHHIIIII")   # arch, gdn, N, M, fingerprint, height, width, len z, len y


def parse(data: bytes) -> dict:
  n = data[5]
  arch, gdn, nf, nl, fp, h, w, lz, ly = FIELDS.unpack_from(data, 6 + n)
  body = 6 + n + FIELDS.size + 4
  return dict(magic=data[:4], version=data[4], name=data[6:6 + n], arch=arch, gdn=gdn, n=nf,
              m=nl, fp=fp, h=h, w=w, z=data[body:body + lz], y=data[body + lz:body + lz + ly])


def forge(f: dict) -> bytes:
  """A stream with the fields of `f` and a correct CRC-32."""
  head = (f["magic"] + bytes([f["version"], len(f["name"])]) + f["name"]
          + FIELDS.pack(f["arch"], f["gdn"], f["n"], f["m"], f["fp"], f["h"], f["w"],
                        len(f["z"]), len(f["y"])))
  crc = zlib.crc32(f["y"], zlib.crc32(f["z"], zlib.crc32(head)))
  return head + struct.pack("<I", crc) + f["z"] + f["y"]


def mutations(data: bytes, other_names: list[bytes], seed: int = 0) -> list[tuple[str, bytes]]:
  """`(kind, stream)` pairs; kinds starting with "benign" may decode."""
  rng = np.random.default_rng(seed)
  base = parse(data)
  out = []

  def add(kind, **changes):
    out.append((kind, forge({**base, **changes})))

  for i in range(124):                        # 1-4 changed bytes in a payload
    key = "z" if i % 4 == 0 else "y"
    p = bytearray(base[key])
    for pos in rng.integers(0, len(p), rng.integers(1, 5)):
      p[pos] = (p[pos] + int(rng.integers(1, 256))) % 256
    add(f"payload-bytes-{key}", **{key: bytes(p)})
  for i in range(60):                         # single bit flips
    key = "z" if i % 3 == 0 else "y"
    p = bytearray(base[key])
    p[rng.integers(len(p))] ^= 1 << int(rng.integers(8))
    add(f"payload-bit-{key}", **{key: bytes(p)})
  for i in range(40):                         # truncated payloads (lengths fixed up)
    key = "z" if i % 4 == 0 else "y"
    add(f"payload-truncated-{key}", **{key: base[key][:rng.integers(0, len(base[key]))]})
  for i in range(30):                         # extended payloads: zeros or random words
    key = "z" if i % 3 == 0 else "y"
    extra = bytes(4 * int(rng.integers(1, 5))) if i % 2 else rng.bytes(int(rng.integers(1, 17)))
    add(f"payload-extended-{key}", **{key: base[key] + extra})
  add("payload-swapped", z=base["y"], y=base["z"])
  add("payload-empty-y", y=b"")
  add("payload-empty-z", z=b"")
  add("payload-zeros-y", y=bytes(len(base["y"])))
  add("payload-zeros-z", z=bytes(len(base["z"])))
  for side in (8192, 16384, 65536):           # decompression bombs: a size and no data
    add("bomb-empty", h=side, w=side, z=b"", y=b"")
    add("bomb-zeros", h=side, w=side, z=bytes(64), y=bytes(4096))
    add("bomb-real-payload", h=side, w=side)
  for h, w in ((base["h"] - 1, base["w"]), (base["h"], 1), (1, 1)):  # same latent shapes
    add("benign-size", h=h, w=w)
  for h, w in ((base["h"] + 1, base["w"]), (base["h"], 3 * base["w"]), (5000, 5000),
               (0, base["w"]), (base["h"], 0), (65537, 64), (2 ** 32 - 1, 2 ** 32 - 1)):
    add("size", h=h, w=w)
  for nf, nl in ((base["n"] + 1, base["m"]), (base["n"], base["m"] - 1), (0, 0),
                 (65535, 65535)):
    add("widths", n=nf, m=nl)
  for arch in (0, 2, 3, 255):
    add("architecture", arch=arch)
  for gdn in (1, 2, 255):
    add("gdn", gdn=gdn)
  for bit in (0, 7, 16, 31):
    add("fingerprint", fp=base["fp"] ^ (1 << bit))
  for name in other_names:
    add("benign-name", name=name)
  for name in (b"", b"bad name!", b"x" * 65, b"\xff\xfe"):
    add("name", name=name)
  for version in (0, 2, 255):
    add("version", version=version)
  add("magic", magic=b"JXCE")
  return out


def run_cases() -> dict:
  """Decodes every mutation under the watchdog; the summary as a dict."""
  resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jaxcomp.codecs import bitstream, compression, pretrained  # pylint: disable=g-import-not-at-top

  names = pretrained.list_models()
  name = next(n for n in names if pretrained.load(n)[0].coded_latents == ("z", "y"))
  model, params, _ = pretrained.load(name)            # a hyperprior: both streams
  tables = compression.coding_tables(model, params)
  shared = pathlib.Path(os.environ.get("JAXCOMP_SHARED_DATA", ROOT.parent / "shared" / "data"))
  image = np.asarray(Image.open(shared / "kodak" / "kodim23.png"))[200:264, 300:364]
  data = compression.compress(model, params, image, name=name, tables=tables)
  # Another model's name only changes the header's name: the stream still decodes.
  cases = mutations(data, [n.encode() for n in names if n != name][:2])

  def alarm(signum, frame):
    raise TimeoutError(f"decoding took more than {CASE_SECONDS} s")

  signal.signal(signal.SIGALRM, alarm)
  outcomes, unexpected, slowest = {}, [], 0.0
  for kind, stream in cases:
    start = time.perf_counter()
    signal.alarm(CASE_SECONDS)
    try:
      decoded = compression.decompress(model, params, stream, tables=tables)
      header = parse(stream)
      ok = decoded.shape == (header["h"], header["w"], 3) and decoded.dtype == np.uint8
      outcome = "decoded" if ok else f"decoded with shape {decoded.shape}"
    except bitstream.StreamError as e:
      outcome = "StreamError"
      if "\n" in str(e):
        outcome = "StreamError on several lines"
    except BaseException as e:  # noqa: BLE001  (anything else is a failure of the decoder)
      outcome = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
      signal.alarm(0)
    slowest = max(slowest, time.perf_counter() - start)
    outcomes.setdefault(kind, {}).setdefault(outcome, 0)
    outcomes[kind][outcome] += 1
    allowed = ("StreamError", "decoded") if kind.startswith("benign") else ("StreamError",)
    if outcome not in allowed:
      unexpected.append((kind, outcome))
  return {"cases": len(cases), "outcomes": outcomes, "unexpected": unexpected,
          "slowest_case_s": slowest,
          "max_rss_gb": _peak_rss_kib() / 2 ** 20}


def _peak_rss_kib() -> int:
  """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux keeps that across
  exec, so it reports the forking pytest worker's peak (4.1 GB seen) instead of ours."""
  status = pathlib.Path("/proc/self/status")
  if status.exists():
    for line in status.read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1])
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_forged_streams_fail_cleanly_under_a_watchdog():
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, __file__], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  print(json.dumps(summary, indent=1), f"\nwall {time.perf_counter() - start:.1f} s")
  assert summary["cases"] >= 300
  assert not summary["unexpected"], summary["unexpected"]
  # Every mutation that changes the payload, a size that changes the latents, or a
  # field the model disagrees with is refused; the benign ones decode to their size.
  refused = sum(n for kind, o in summary["outcomes"].items() if not kind.startswith("benign")
                for outcome, n in o.items() if outcome == "StreamError")
  assert refused == summary["cases"] - sum(
      sum(o.values()) for kind, o in summary["outcomes"].items() if kind.startswith("benign"))
  assert summary["outcomes"]["benign-size"] == {"decoded": 3}
  assert summary["max_rss_gb"] < MEMORY_LIMIT / 2 ** 30


if __name__ == "__main__":
  print(json.dumps(run_cases()))
