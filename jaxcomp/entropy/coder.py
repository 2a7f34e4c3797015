"""Host-side entropy coding of integer symbols with integer probability tables.

Tables: each probability table (a channel of the factorized prior, or a scale
of the Gaussian conditional's scale table) is quantized once to integer counts
summing to `2**16` (`quantize_pmf`), with every symbol given at least one count
and a final *escape* entry that carries the mass outside the table. The counts
are the only thing the coder sees, so a stream decodes identically wherever the
same counts are used; `Tables.fingerprint` (CRC-32 of all counts and offsets)
lets a decoder refuse tables that differ from the encoder's.

Coding: constriction's range coder (`constriction.stream.queue`), a
well-maintained Rust implementation with 32-bit words and 24-bit model
precision; each table's counts are handed to it as exact dyadic probabilities
`count / 2**16`. Symbols are coded grouped by table (table 0's symbols in raster
order, then table 1's, ...), then the escaped values: for each symbol outside
its table, a sign / bit-length header (uniform over 64) and the remaining bits
(uniform, in chunks of at most 16 bits), Elias-gamma style, as CompressAI's
range coder does for out-of-range values.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import constriction
import numpy as np

PRECISION = 16
MAX_SYMBOL = 2 ** 30       # |symbol| limit (escaped values fit in 31 bits)


class CodingError(ValueError):
  """A stream that cannot be decoded with the given tables (corrupt or foreign)."""


def quantize_pmf(pmf: np.ndarray, tail_mass: float, *, precision: int = PRECISION) -> np.ndarray:
  """Integer counts summing to `2**precision` for a pmf plus an escape symbol.

  Each of the `n + 1` entries gets `1 + floor(p * (2**precision - n - 1))`
  counts (so none is zero); the remaining counts go to the largest fractional
  remainders, ties to the lower index. Integer arithmetic after one float64
  multiplication; deterministic.

  Args:
    pmf: `(n,)` non-negative floats (need not sum to 1 exactly).
    tail_mass: probability of the escape symbol (mass outside the table).
    precision: bits of the total count.

  Returns:
    `(n + 1,)` int64 counts, all >= 1, summing to `2**precision`; the last one is the escape.
  """
  p = np.append(np.clip(np.asarray(pmf, np.float64), 0, None), max(float(tail_mass), 0.0))
  total = 2 ** precision
  if p.size > total // 2:
    raise ValueError(f"table of {p.size} entries is too long for {precision}-bit counts")
  if not np.all(np.isfinite(p)) or p.sum() <= 0:
    raise ValueError("pmf must be finite with positive mass")
  free = total - p.size
  scaled = p / p.sum() * free
  counts = np.floor(scaled).astype(np.int64)
  remainder = free - int(counts.sum())
  order = np.argsort(-(scaled - counts), kind="stable")
  counts[order[:remainder]] += 1
  return counts + 1


@dataclasses.dataclass(frozen=True, eq=False)
class Tables:
  """Quantized probability tables.

  counts[t]: int64 `(n_t + 1,)` counts of table t (the last is the escape);
  offsets[t]: the symbol value of entry 0 of table t.
  """
  counts: tuple[np.ndarray, ...]
  offsets: np.ndarray

  @classmethod
  def from_pmfs(cls, pmf: np.ndarray, tail: np.ndarray, offsets: np.ndarray,
                lengths: np.ndarray) -> "Tables":
    """Quantizes `(T, L)` pmfs (row t valid up to `lengths[t]`) with their tails."""
    counts = tuple(quantize_pmf(pmf[t, :lengths[t]], tail[t]) for t in range(len(lengths)))
    return cls(counts, np.asarray(offsets, np.int64))

  def __len__(self) -> int:
    return len(self.counts)

  @functools.cached_property
  def fingerprint(self) -> int:
    """CRC-32 of all counts and offsets: equal tables <=> (almost surely) equal fingerprints."""
    crc = zlib.crc32(np.asarray(self.offsets, "<i8").tobytes())
    for c in self.counts:
      crc = zlib.crc32(np.asarray(c, "<i8").tobytes(), crc)
    return crc

  @functools.cached_property
  def _models(self) -> tuple:
    return tuple(constriction.stream.model.Categorical(c / float(2 ** PRECISION), perfect=False)
                 for c in self.counts)

  @functools.cached_property
  def _sizes(self) -> np.ndarray:
    return np.asarray([len(c) - 1 for c in self.counts], np.int64)

  @functools.cached_property
  def _min_bits(self) -> np.ndarray:
    """`(T,)` the cheapest symbol's cost in each table, bits."""
    return np.asarray([PRECISION - np.log2(c.max()) for c in self.counts], np.float64)


def _check_indexes(indexes: np.ndarray, tables: Tables) -> np.ndarray:
  indexes = np.asarray(indexes)
  if not np.issubdtype(indexes.dtype, np.integer):
    raise ValueError(f"table indexes must be integers, got {indexes.dtype}")
  if indexes.size and (indexes.min() < 0 or indexes.max() >= len(tables)):
    raise ValueError(f"table indexes must be in [0, {len(tables)}), got "
                     f"[{indexes.min()}, {indexes.max()}]")
  return indexes.reshape(-1).astype(np.int16 if len(tables) <= 2 ** 15 else np.int32, copy=False)


def _groups(t: np.ndarray, num_tables: int) -> list[tuple[int, np.ndarray]]:
  """`(table, positions)` of every used table, ascending; positions in raster order.

  This is the coding order: table 0's symbols, then table 1's, ... A stable
  (radix, for int16) sort instead of a mask per table: O(n), not O(n * tables).
  """
  order = np.argsort(t, kind="stable")
  bounds = np.concatenate([[0], np.cumsum(np.bincount(t, minlength=num_tables))])
  return [(table, order[bounds[table]:bounds[table + 1]])
          for table in np.flatnonzero(np.diff(bounds))]


def min_length(counts: np.ndarray, tables: Tables) -> int:
  """A lower bound on the bytes of any stream coding `counts[t]` symbols with table t.

  A symbol coded with table t costs at least `-log2(max(counts_t) / 2**16)`
  bits; the coder keeps at most 64 bits in its state, so a stream of `I` bits
  of information is at least `(I - 64) / 8` bytes long. Lets a decoder refuse a
  short stream that claims many symbols before decoding (or allocating) anything.

  Args:
    counts: `(len(tables),)` number of symbols per table (or a scalar: that many
      symbols with the cheapest table).

  Returns:
    The bound in bytes (>= 0).
  """
  counts = np.asarray(counts, np.float64)
  cost = tables._min_bits if counts.ndim else tables._min_bits.min(initial=np.inf)
  bits = float(np.sum(counts * cost)) if counts.any() else 0.0
  return max(0, int((bits - 64) // 8))


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: Tables) -> bytes:
  """Range-codes integer symbols, symbol i with table `indexes[i]`.

  Args:
    symbols: int array (any shape), `|symbol| < 2**30`; values outside a table
      are escaped (exact, at a few extra bits).
    indexes: int array of the same shape, table of each symbol.
    tables: the quantized tables.

  Returns:
    The compressed bytes (a multiple of 4 long).
  """
  symbols = np.asarray(symbols)
  if symbols.shape != np.shape(indexes):
    raise ValueError(f"symbols {symbols.shape} and indexes {np.shape(indexes)} differ in shape")
  if not np.issubdtype(symbols.dtype, np.integer):
    raise ValueError(f"symbols must be integers, got {symbols.dtype}")
  q = symbols.reshape(-1)
  if q.size and max(-int(q.min()), int(q.max())) >= MAX_SYMBOL:
    raise ValueError(f"symbol magnitude {max(-int(q.min()), int(q.max()))} exceeds 2**30")
  t = _check_indexes(indexes, tables)
  escaped = np.zeros(q.size, bool)
  encoder = constriction.stream.queue.RangeEncoder()
  for table, pos in _groups(t, len(tables)):
    entry = q[pos].astype(np.int64) - tables.offsets[table]
    size = tables._sizes[table]
    out = (entry < 0) | (entry >= size)
    escaped[pos] = out
    encoder.encode(np.where(out, size, entry).astype(np.int32), tables._models[table])
  if escaped.any():
    te = t[escaped]
    e = q[escaped].astype(np.int64) - tables.offsets[te]
    negative = e < 0
    magnitude = np.where(negative, -e, e - tables._sizes[te] + 1)      # >= 1
    _encode_escapes(encoder, magnitude, negative)
  return encoder.get_compressed().astype("<u4").tobytes()


def decode(data: bytes, indexes: np.ndarray, tables: Tables) -> np.ndarray:
  """Inverse of `encode`: the int32 symbols, shaped like `indexes`.

  The payload must be consumed exactly: `data` is accepted only if it is the
  very stream `encode` makes of the decoded symbols (checked by encoding them
  again), so a stream that ran out of words, has words left over, or was
  altered in any way is refused, even where the range decoder itself cannot
  tell (it reads zeros past the end of its words).

  Raises:
    CodingError: if `data` is not a stream of exactly these symbols (too short
      for their count, escape values out of range, words missing, left over or
      altered).
  """
  shape = np.shape(indexes)
  t = _check_indexes(indexes, tables)
  if len(data) % 4:
    raise CodingError(f"entropy-coded stream length {len(data)} is not a multiple of 4")
  need = min_length(np.bincount(t, minlength=len(tables)), tables)
  if len(data) < need:
    raise CodingError(f"entropy-coded stream of {len(data)} bytes is too short for "
                      f"{t.size} symbols (at least {need} bytes)")
  decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
  q = np.empty(t.size, np.int32)
  escaped = np.zeros(t.size, bool)
  try:
    for table, pos in _groups(t, len(tables)):
      entry = decoder.decode(tables._models[table], pos.size)
      escaped[pos] = entry == tables._sizes[table]
      q[pos] = entry + tables.offsets[table]
    if escaped.any():
      te = t[escaped]
      magnitude, negative = _decode_escapes(decoder, te.size)
      value = np.where(negative, -magnitude, magnitude + tables._sizes[te] - 1) + tables.offsets[te]
      if np.abs(value).max() >= MAX_SYMBOL:
        raise CodingError("entropy-coded stream decodes to out-of-range symbols")
      q[escaped] = value
  except CodingError:
    raise
  except Exception as e:  # noqa: BLE001  (constriction raises assorted types on bad data)
    raise CodingError(f"entropy-coded stream is corrupt ({type(e).__name__}: {e})") from None
  q = q.reshape(shape)
  if encode(q, indexes, tables) != bytes(data):
    raise CodingError("entropy-coded stream is not exactly the coding of its symbols "
                      "(truncated, extended or corrupt)")
  return q


def _bit_chunks():
  """(bit count, chunk shift, chunk width) in one fixed order shared by encoder and decoder."""
  for k in range(1, 32):
    for shift in range(0, k, 16):
      yield k, shift, min(16, k - shift)


def _encode_escapes(encoder, magnitude: np.ndarray, negative: np.ndarray) -> None:
  nbits = np.frexp(magnitude)[1].astype(np.int64) - 1   # magnitude in [2**nbits, 2**(nbits+1))
  encoder.encode((negative * 32 + nbits).astype(np.int32), constriction.stream.model.Uniform(64))
  rest = magnitude - (1 << nbits)
  for k, shift, width in _bit_chunks():
    sel = nbits == k
    if sel.any():
      chunk = (rest[sel] >> shift) & ((1 << width) - 1)
      encoder.encode(chunk.astype(np.int32), constriction.stream.model.Uniform(1 << width))


def _decode_escapes(decoder, count: int) -> tuple[np.ndarray, np.ndarray]:
  header = decoder.decode(constriction.stream.model.Uniform(64), count).astype(np.int64)
  negative, nbits = header >= 32, header % 32
  rest = np.zeros(count, np.int64)
  for k, shift, width in _bit_chunks():
    sel = nbits == k
    if sel.any():
      chunk = decoder.decode(constriction.stream.model.Uniform(1 << width), int(sel.sum()))
      rest[sel] |= chunk.astype(np.int64) << shift
  return (1 << nbits) + rest, negative
