"""The `.jcx` file format of jaxcomp's learned codecs, with strict parsing.

Layout (little-endian):

  offset  size  field
  0       4     magic b"JXCD"
  4       1     format version (1)
  5       1     n = length of the model name (1..64)
  6       n     model name, ASCII [A-Za-z0-9._-] (a shipped name, or "checkpoint")
  6+n     1     architecture: the registered codec's `stream_id` (`learned.register`;
                0 factorized, 1 hyperprior, 2 bls2017)
          1     GDN form (0 classic, 1 simplified)
          2     N (num_filters)      2  M (num_latent)
          4     fingerprint of the coding tables (CRC-32; refuses a different model)
          4     image height         4  image width
          4     length of the z stream   4  length of the y stream
          4     CRC-32 of every byte before it and of both streams
  header  ...   z stream (empty for factorized / bls2017), then y stream

Any stream that is not exactly this (wrong magic or version, unknown fields,
lengths that do not add up, checksum mismatch) raises `StreamError`.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib

from jaxcomp.codecs import learned

MAGIC = b"JXCD"
VERSION = 1
GDN_CODES = ("classic", "simplified")
MAX_SIDE = 2 ** 16          # largest image height / width accepted
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FIELDS = struct.Struct("<BBHHIIIII")
_CRC = struct.Struct("<I")


class StreamError(ValueError):
  """A byte string that is not a valid jaxcomp codec stream; the message says why."""


@dataclasses.dataclass(frozen=True)
class Header:
  """What a stream says about itself."""
  model: str
  architecture: str
  gdn: str
  num_filters: int
  num_latent: int
  fingerprint: int
  height: int
  width: int

  def __post_init__(self):
    if not _NAME.match(self.model):
      raise ValueError(f"model name {self.model!r} must be 1-64 characters of [A-Za-z0-9._-]")
    if self.architecture not in learned.CODECS:
      raise ValueError(f"architecture {self.architecture!r} not in {learned.CODECS.names()}")
    if self.gdn not in GDN_CODES:
      raise ValueError(f"gdn {self.gdn!r} not in {GDN_CODES}")
    if not (0 < self.num_filters < 2 ** 16 and 0 < self.num_latent < 2 ** 16):
      raise ValueError(f"N={self.num_filters}, M={self.num_latent} must be in [1, 65535]")
    if not (0 < self.height <= MAX_SIDE and 0 < self.width <= MAX_SIDE):
      raise ValueError(f"image size {self.height}x{self.width} must be in [1, {MAX_SIDE}]")
    if not 0 <= self.fingerprint < 2 ** 32:
      raise ValueError(f"fingerprint {self.fingerprint} is not a 32-bit value")


def pack(header: Header, z_stream: bytes, y_stream: bytes) -> bytes:
  """Serialises a header and the two entropy-coded streams."""
  name = header.model.encode("ascii")
  head = (MAGIC + bytes([VERSION, len(name)]) + name + _FIELDS.pack(
      learned.CODECS.get(header.architecture).stream_id, GDN_CODES.index(header.gdn),
      header.num_filters, header.num_latent, header.fingerprint, header.height, header.width,
      len(z_stream), len(y_stream)))
  crc = zlib.crc32(y_stream, zlib.crc32(z_stream, zlib.crc32(head)))
  return head + _CRC.pack(crc) + z_stream + y_stream


def header_size(model: str) -> int:
  """Bytes of the header (everything but the two streams) for a model name."""
  return len(MAGIC) + 2 + len(model) + _FIELDS.size + _CRC.size


def unpack(data: bytes) -> tuple[Header, bytes, bytes]:
  """Parses a stream into `(header, z_stream, y_stream)`.

  Raises:
    StreamError: naming the first problem found.
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise StreamError(f"a codec stream must be bytes, got {type(data).__name__}")
  data = bytes(data)
  if data[:len(MAGIC)] != MAGIC:
    raise StreamError("not a jaxcomp codec stream (bad magic bytes)")
  if len(data) < len(MAGIC) + 2:
    raise StreamError("truncated stream (header incomplete)")
  version, name_len = data[4], data[5]
  if version != VERSION:
    raise StreamError(f"unsupported stream version {version} (this jaxcomp reads {VERSION})")
  fields_at = 6 + name_len
  body_at = fields_at + _FIELDS.size + _CRC.size
  if len(data) < body_at:
    raise StreamError("truncated stream (header incomplete)")
  try:
    name = data[6:fields_at].decode("ascii")
  except UnicodeDecodeError:
    raise StreamError("corrupt stream (model name is not ASCII)") from None
  arch, gdn, n, m, fingerprint, height, width, len_z, len_y = _FIELDS.unpack_from(data, fields_at)
  (crc,) = _CRC.unpack_from(data, fields_at + _FIELDS.size)
  if len(data) < body_at + len_z + len_y:
    raise StreamError(f"truncated stream ({len(data)} bytes, header announces "
                      f"{body_at + len_z + len_y})")
  if len(data) > body_at + len_z + len_y:
    raise StreamError(f"stream has {len(data) - body_at - len_z - len_y} unexpected trailing bytes")
  z_stream, y_stream = data[body_at:body_at + len_z], data[body_at + len_z:]
  if zlib.crc32(y_stream, zlib.crc32(z_stream, zlib.crc32(data[:fields_at + _FIELDS.size]))) != crc:
    raise StreamError("corrupt stream (checksum mismatch)")
  try:
    architecture = learned.architecture_of_stream_id(arch)
  except KeyError:
    architecture = None
  if architecture is None or gdn >= len(GDN_CODES):
    raise StreamError(f"corrupt stream (unknown architecture code {arch} or GDN code {gdn})")
  try:
    header = Header(name, architecture, GDN_CODES[gdn], n, m, fingerprint, height, width)
  except ValueError as e:
    raise StreamError(f"corrupt stream ({e})") from None
  return header, z_stream, y_stream
