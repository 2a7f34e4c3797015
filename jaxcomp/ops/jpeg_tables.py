"""IJG / ITU-T T.81 Annex K quantization tables and libjpeg's quality scaling.

Tables are in natural (row-major) order, `table[u, v]` for vertical frequency u and
horizontal frequency v: the order libjpeg's `jpeg_add_quant_table` and Pillow's
`qtables=` / `Image.quantization` use (the DQT marker stores them in zigzag order).
Kept in `ops` because both the codec (`jaxcomp.codecs.jpeg`) and the JPEG-DL layer
(`jaxcomp.layers.jpeg_layer`) start from them.
"""

from __future__ import annotations

import numbers

import numpy as np

# T.81 Table K.1 (luminance) and K.2 (chrominance).
LUMA_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.int32)
CHROMA_TABLE = np.full((8, 8), 99, dtype=np.int32)
CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def check_quality(quality) -> int:
  """Returns `quality` as an int, or raises ValueError unless it is an integer in 1..100."""
  if (isinstance(quality, bool) or not isinstance(quality, numbers.Integral)
      or not 1 <= quality <= 100):
    raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
  return int(quality)


def quality_scaling(quality: int) -> int:
  """libjpeg's `jpeg_quality_scaling`: percentage `5000 // q` below 50, else `200 - 2q`."""
  quality = check_quality(quality)
  return 5000 // quality if quality < 50 else 200 - 2 * quality


def scale_table(table: np.ndarray, quality: int) -> np.ndarray:
  """libjpeg's `jpeg_add_quant_table` with `force_baseline`: int32 [8, 8] in 1..255.

  `Q = clip((T * s + 50) // 100, 1, 255)` with `s = quality_scaling(quality)` (integer
  arithmetic throughout, as libjpeg's jcparam.c; SPEC Sec. 1).
  """
  scale = quality_scaling(quality)
  return np.clip((np.asarray(table, np.int64) * scale + 50) // 100, 1, 255).astype(np.int32)


def quality_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
  """(luma, chroma) int32 [8, 8] tables that libjpeg (and Pillow) use at `quality`."""
  return scale_table(LUMA_TABLE, quality), scale_table(CHROMA_TABLE, quality)
