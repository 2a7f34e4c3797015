"""Tests of the .jcx container: round trip and strict parsing under fuzzing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jaxcomp.codecs import bitstream

HEADER = bitstream.Header("hyperprior-q3", "hyperprior", "classic", 64, 96, 0xDEADBEEF, 512, 768)


def _stream(seed=0):
  rng = np.random.default_rng(seed)
  return bitstream.pack(HEADER, rng.bytes(40), rng.bytes(400))


def test_round_trip():
  z, y = b"\x01\x02\x03\x04", b"\x05" * 8
  header, z2, y2 = bitstream.unpack(bitstream.pack(HEADER, z, y))
  assert (header, z2, y2) == (HEADER, z, y)
  assert len(bitstream.pack(HEADER, z, y)) == bitstream.header_size(HEADER.model) + 12


@pytest.mark.parametrize("field,value,match", [
    ("model", "bad name!", "model name"), ("architecture", "vq", "architecture"),
    ("gdn", "x", "gdn"), ("height", 0, "image size"), ("width", 70000, "image size"),
    ("num_filters", 0, "N=")])
def test_header_validation(field, value, match):
  kw = {**HEADER.__dict__, field: value}
  with pytest.raises(ValueError, match=match):
    bitstream.Header(**kw)


def test_specific_errors():
  data = _stream()
  cases = {b"": "bad magic", b"\x89PNG\r\n\x1a\n": "bad magic", data[:5]: "truncated",
           data[:30]: "truncated", data[:-1]: "truncated", data + b"\0": "trailing",
           data[:4] + b"\x07" + data[5:]: "version"}
  for d, match in cases.items():
    with pytest.raises(bitstream.StreamError, match=match):
      bitstream.unpack(d)
  flipped = bytearray(data)
  flipped[-5] ^= 0x10
  with pytest.raises(bitstream.StreamError, match="checksum"):
    bitstream.unpack(bytes(flipped))
  with pytest.raises(bitstream.StreamError, match="bytes"):
    bitstream.unpack("JXCD")


def test_fuzz_flips_truncations_and_foreign_data():
  """600 corrupted or foreign inputs: every one raises StreamError (CRC-32 + length checks)."""
  rng = np.random.default_rng(0)
  data = _stream(1)
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
  foreign = [buf.getvalue(), b"JXCD", b"JXCD" + rng.bytes(100), rng.bytes(500), b"\0" * 64]
  cases = list(foreign)
  for _ in range(200):       # 1-4 random byte changes anywhere (header or payload)
    d = bytearray(data)
    for pos in rng.integers(0, len(d), rng.integers(1, 5)):
      d[pos] = (d[pos] + int(rng.integers(1, 256))) % 256
    cases.append(bytes(d))
  for _ in range(200):       # truncations
    cases.append(data[:rng.integers(0, len(data))])
  for _ in range(195):       # garbage appended or inserted
    k = int(rng.integers(0, len(data)))
    cases.append(data[:k] + rng.bytes(int(rng.integers(1, 9))) + data[k:])
  for d in cases:
    with pytest.raises(bitstream.StreamError):
      bitstream.unpack(d)
