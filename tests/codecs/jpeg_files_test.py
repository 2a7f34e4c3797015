"""Real JPEG files through Pillow: tables in natural order, byte accounting, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jaxcomp.codecs import jpeg_files
from jaxcomp.ops.jpeg_tables import quality_tables


@pytest.fixture(scope="module")
def image() -> np.ndarray:
  yy, xx = np.mgrid[:40, :56]
  smooth = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1) % 256
  noise = np.random.default_rng(0).integers(0, 40, smooth.shape)
  return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def test_encode_decode_and_quality_tables(image):
  data = jpeg_files.encode_jpeg(image, quality=50)
  decoded = jpeg_files.decode_jpeg(data)
  assert decoded.shape == image.shape and decoded.dtype == np.uint8
  luma, chroma = jpeg_files.quantization_tables(data)
  np.testing.assert_array_equal(luma, quality_tables(50)[0])
  np.testing.assert_array_equal(chroma, quality_tables(50)[1])
  # Float input in [0, 1] is the same image.
  assert jpeg_files.encode_jpeg(image / 255.0, quality=50) == data


def test_custom_tables_are_written_in_natural_order(image):
  # An asymmetric table: a transposed or zigzag-permuted copy would not compare equal.
  luma = np.arange(1, 65, dtype=np.int32).reshape(8, 8)
  chroma = (np.arange(64, dtype=np.int32).reshape(8, 8) * 3) % 255 + 1
  data = jpeg_files.encode_jpeg(image, qtables=(luma, chroma), subsampling="4:4:4")
  tables = jpeg_files.quantization_tables(data)
  assert len(tables) == 2
  np.testing.assert_array_equal(tables[0], luma)
  np.testing.assert_array_equal(tables[1], chroma)
  with Image.open(io.BytesIO(data)) as im:                     # Pillow's own view
    assert [layer[1:3] for layer in im.layer] == [(1, 1)] * 3  # 4:4:4 sampling
  assert jpeg_files.decode_jpeg(data).shape == image.shape


def test_grey_images(image):
  grey = image[..., 0]
  data = jpeg_files.encode_jpeg(grey[..., None], qtables=(np.full((8, 8), 4),))
  assert jpeg_files.decode_jpeg(data).shape == grey.shape + (1,)
  assert len(jpeg_files.quantization_tables(data)) == 1


def _sos_to_eoi(data: bytes) -> int:
  """Independent count for a baseline file: bytes after the SOS header, before EOI."""
  sos = data.index(b"\xff\xda")
  header = int.from_bytes(data[sos + 2:sos + 4], "big")
  assert data.endswith(b"\xff\xd9")
  return len(data) - 2 - (sos + 2 + header)


@pytest.mark.parametrize("quality", [10, 75, 95])
def test_entropy_coded_bytes_of_baseline_files(image, quality):
  data = jpeg_files.encode_jpeg(image, quality=quality)
  assert data.count(b"\xff\xda") == 1
  count = jpeg_files.entropy_coded_bytes(data)
  assert count == _sos_to_eoi(data)
  assert 0 < count < len(data) - 300         # headers + 2 DQT + 4 DHT exceed 300 bytes


def test_entropy_coded_bytes_with_restarts_and_progressive_scans(image):
  restart = io.BytesIO()
  Image.fromarray(image).save(restart, format="JPEG", quality=75, restart_marker_blocks=1)
  data = restart.getvalue()
  # RST markers sit inside the one scan: still everything from the SOS header to EOI.
  assert jpeg_files.entropy_coded_bytes(data) == _sos_to_eoi(data)
  progressive = io.BytesIO()
  Image.fromarray(image).save(progressive, format="JPEG", quality=75, progressive=True)
  data = progressive.getvalue()
  assert data.count(b"\xff\xda") > 1
  # Several scans with DHT segments between them: less than the SOS..EOI span.
  assert 0 < jpeg_files.entropy_coded_bytes(data) < _sos_to_eoi(data)


def test_round_trip_batch(image):
  batch = np.stack([image, image[::-1]])
  decoded, file_bytes, entropy_bytes = jpeg_files.jpeg_roundtrip(batch, quality=30)
  assert decoded.shape == batch.shape
  assert file_bytes.shape == entropy_bytes.shape == (2,)
  assert np.all(entropy_bytes < file_bytes)
  data = jpeg_files.encode_jpeg(image, quality=30)
  assert file_bytes[0] == len(data) and entropy_bytes[0] == jpeg_files.entropy_coded_bytes(data)


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "exactly one"),
    (dict(quality=50, qtables=(np.ones((8, 8), int),) * 2), "exactly one"),
    (dict(quality=0), "1..100"),
    (dict(qtables=(np.ones((8, 8), int),)), "need 2 tables"),
    (dict(qtables=(np.ones((4, 16), int),) * 2), r"\[8, 8\]"),
    (dict(qtables=(np.ones((8, 8)),) * 2), "integer"),
    (dict(qtables=(np.zeros((8, 8), int),) * 2), "1..255"),
    (dict(qtables=(np.full((8, 8), 256),) * 2), "1..255"),
    (dict(quality=50, subsampling="4:1:1"), "subsampling"),
])
def test_bad_arguments(image, kwargs, match):
  with pytest.raises(ValueError, match=match):
    jpeg_files.encode_jpeg(image, **kwargs)


def test_bad_images_and_files(image):
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    jpeg_files.encode_jpeg(image / 100.0, quality=50)
  with pytest.raises(ValueError, match="shape"):
    jpeg_files.encode_jpeg(image[..., :2], quality=50)
  with pytest.raises(ValueError, match="dtype"):
    jpeg_files.encode_jpeg(image.astype(np.int64), quality=50)
  with pytest.raises(ValueError, match="SOI"):
    jpeg_files.entropy_coded_bytes(b"\x89PNG....")
  with pytest.raises(ValueError, match="EOI|scan"):
    jpeg_files.entropy_coded_bytes(jpeg_files.encode_jpeg(image, quality=50)[:-2])
