"""IJG tables and libjpeg's quality scaling against Pillow (libjpeg-turbo)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jaxcomp.ops import jpeg_tables


def test_tables_equal_pillow_for_every_quality():
  image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8))
  for quality in range(1, 101):
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    pillow = Image.open(io.BytesIO(buf.getvalue())).quantization
    luma, chroma = jpeg_tables.quality_tables(quality)
    np.testing.assert_array_equal(luma, np.reshape(pillow[0], (8, 8)), err_msg=f"q={quality}")
    np.testing.assert_array_equal(chroma, np.reshape(pillow[1], (8, 8)), err_msg=f"q={quality}")


def test_scaling_formula():
  # libjpeg jcparam.c: 5000 / q (integer division) below 50, 200 - 2q from 50.
  assert [jpeg_tables.quality_scaling(q) for q in (1, 3, 49, 50, 75, 100)] == [
      5000, 1666, 102, 100, 50, 0]
  np.testing.assert_array_equal(jpeg_tables.quality_tables(50)[0], jpeg_tables.LUMA_TABLE)
  np.testing.assert_array_equal(jpeg_tables.quality_tables(100)[1], np.ones((8, 8)))
  assert jpeg_tables.quality_tables(1)[0].max() == 255          # force_baseline clip


@pytest.mark.parametrize("bad", [0, 101, 50.0, True, "50", None])
def test_bad_quality(bad):
  with pytest.raises(ValueError, match="1..100"):
    jpeg_tables.quality_tables(bad)
