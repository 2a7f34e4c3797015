"""Real JPEG files through Pillow (libjpeg-turbo): encode, decode, count bytes.

Host-side (numpy, not jit-able). Bit accounting follows the compressed-training thesis
(Sec. 3.2; SPEC Sec. 1): `entropy_coded_bytes` counts only the entropy-coded scan
data, from the end of each SOS header to the next marker (EOI for a baseline file),
excluding headers, Huffman and quantization tables; `len(data)` is the whole file.

Quantization tables are in natural (row-major) order everywhere: Pillow's `qtables=`
hands them to libjpeg's `jpeg_add_quant_table` in that order, and
`Image.quantization` converts the zigzag order of the DQT marker back to it
(Pillow >= 8.3; tests/codecs/jpeg_files_test.py checks the round trip).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxcomp.ops.jpeg_tables import check_quality

_PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:0": 2}


def to_uint8(image: np.ndarray) -> np.ndarray:
  """uint8 as is; float in [0, 1] -> round(255 x) as uint8 (ValueError otherwise, NaN included)."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  if not np.issubdtype(image.dtype, np.floating):
    raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}")
  if image.size and not (image.min() >= 0.0 and image.max() <= 1.0):     # NaN fails too
    raise ValueError(f"float image must be finite and lie in [0, 1], got "
                     f"[{image.min()}, {image.max()}]")
  return np.round(image * 255.0).astype(np.uint8)


def _pil_image(image: np.ndarray) -> Image.Image:
  image = to_uint8(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    return Image.fromarray(image, mode="L")
  if image.ndim == 3 and image.shape[-1] == 3:
    return Image.fromarray(image, mode="RGB")
  raise ValueError(f"image must be [H, W, 3], [H, W, 1] or [H, W], got shape {image.shape}")


def check_table(table) -> np.ndarray:
  """An [8, 8] table of integers in 1..255 as int32, or ValueError."""
  t = np.asarray(table)
  if t.shape != (8, 8) or not np.issubdtype(t.dtype, np.integer):
    raise ValueError(f"a quantization table must be an integer [8, 8] array, "
                     f"got {t.dtype} {t.shape}")
  if t.min() < 1 or t.max() > 255:
    raise ValueError(f"quantization steps must lie in 1..255, got [{t.min()}, {t.max()}]")
  return t.astype(np.int32)


def encode_jpeg(image: np.ndarray, *, quality: int | None = None,
                qtables: Sequence[np.ndarray] | None = None, subsampling: str = "4:2:0",
                optimize: bool = False) -> bytes:
  """Encodes one image as a baseline JPEG file with Pillow.

  Args:
    image: [H, W, 3] RGB or [H, W] / [H, W, 1] grey; uint8 or float in [0, 1].
    quality: IJG quality 1..100, or
    qtables: integer [8, 8] tables in 1..255, natural order: (luma, chroma) for RGB
      (chroma serves Cb and Cr), (luma,) for grey.
    subsampling: "4:2:0" or "4:4:4" (ignored for grey).
    optimize: optimized Huffman tables (smaller files) instead of the standard ones.

  Returns:
    The file's bytes.
  """
  if (quality is None) == (qtables is None):
    raise ValueError("give exactly one of quality= or qtables=")
  if subsampling not in _PIL_SUBSAMPLING:
    raise ValueError(f"unknown subsampling {subsampling!r}; expected one of "
                     f"{tuple(_PIL_SUBSAMPLING)}")
  pil = _pil_image(image)
  options = dict(subsampling=_PIL_SUBSAMPLING[subsampling], optimize=optimize)
  if quality is not None:
    options["quality"] = check_quality(quality)
  else:
    tables = [check_table(t) for t in qtables]
    if len(tables) != (1 if pil.mode == "L" else 2):
      raise ValueError(f"{pil.mode} images need {1 if pil.mode == 'L' else 2} tables, "
                       f"got {len(tables)}")
    options["qtables"] = [t.reshape(-1).tolist() for t in tables]
  buf = io.BytesIO()
  pil.save(buf, format="JPEG", **options)
  return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
  """Decodes with Pillow: uint8 [H, W, 3] for colour files, [H, W, 1] for grey ones."""
  with Image.open(io.BytesIO(data)) as im:
    if im.mode == "L":
      return np.asarray(im)[..., None]
    return np.asarray(im.convert("RGB"))


def quantization_tables(data: bytes) -> list[np.ndarray]:
  """The file's quantization tables (`Image.quantization`), int32 [8, 8], natural order."""
  with Image.open(io.BytesIO(data)) as im:
    return [np.asarray(im.quantization[k], np.int32).reshape(8, 8)
            for k in sorted(im.quantization)]


def entropy_coded_bytes(data: bytes) -> int:
  """Bytes of entropy-coded scan data (end of each SOS header to the next marker).

  Byte stuffing (0xFF00) and restart markers (RST0-7) inside a scan count as scan
  data; every other marker segment (SOI, APPn, DQT, SOF, DHT, SOS headers, EOI) does not.
  """
  if data[:2] != b"\xff\xd8":
    raise ValueError("not a JPEG file (no SOI marker)")
  pos, total = 2, 0
  while pos + 1 < len(data):
    if data[pos] != 0xFF:
      raise ValueError(f"corrupt JPEG: expected a marker at byte {pos}")
    marker = data[pos + 1]
    if marker == 0xFF:                        # fill byte
      pos += 1
      continue
    if marker == 0xD9:                        # EOI
      return total
    if marker == 0x01 or 0xD0 <= marker <= 0xD7:
      pos += 2
      continue
    end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    if marker != 0xDA:                        # not SOS: skip the whole segment
      pos = end
      continue
    scan = end
    while True:
      scan = data.find(b"\xff", scan)
      if scan < 0 or scan + 1 >= len(data):
        raise ValueError("corrupt JPEG: scan without a terminating marker")
      nxt = data[scan + 1]
      if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
        scan += 2
        continue
      break
    total += scan - end
    pos = scan
  raise ValueError("corrupt JPEG: no EOI marker")


def jpeg_roundtrip(images: np.ndarray, **encode_options
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Encodes and decodes a batch through Pillow, counting bytes.

  Args:
    images: [B, H, W, C] (C = 3 or 1), uint8 or float in [0, 1].
    **encode_options: as `encode_jpeg` (quality= or qtables=, subsampling, optimize).

  Returns:
    (decoded uint8 [B, H, W, C], file bytes int64 [B], entropy-coded bytes int64 [B]).
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  files = [encode_jpeg(im, **encode_options) for im in images]
  decoded = np.stack([decode_jpeg(f) for f in files])
  return (decoded, np.array([len(f) for f in files], np.int64),
          np.array([entropy_coded_bytes(f) for f in files], np.int64))
