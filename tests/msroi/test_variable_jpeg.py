"""Tests of jaxcomp.msroi.variable_jpeg: Eq. 2.7 levels, 8x8 block levels, the mosaic of
Algorithm 1 against Pillow's own JPEGs, and the equal-size search of Q_f."""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcomp.msroi import variable_jpeg as vj


def _pillow_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """Pillow's decode of its own JPEG (4:2:0, standard tables): the reference of every level."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "JPEG", quality=quality, subsampling=2)
  return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def crop(shared_data):
  """A 61x75 Kodak crop (sides not multiples of 8: partial edge blocks)."""
  return np.asarray(Image.open(shared_data / "kodak" / "kodim23.png").convert("RGB"))[200:261,
                                                                                       300:375]


@pytest.fixture(scope="module")
def medium(shared_data):
  """A 181x203 Kodak crop and a centre-weighted map."""
  image = np.asarray(Image.open(shared_data / "kodak" / "kodim05.png").convert("RGB"))[:181, :203]
  y, x = np.mgrid[:181, :203]
  m = np.exp(-0.5 * (((y - 90) / 45) ** 2 + ((x - 101) / 50) ** 2)).astype(np.float32)
  return image, m


def test_levels():
  assert vj.levels() == (30, 40, 50, 60, 70)                      # Sec. 2.5
  assert vj.levels(form="printed") == (30, 38, 46, 54, 62)        # Eq. 2.7 as printed
  assert vj.levels(30, 70, 4) == (30, 43, 57, 70)                 # 30 + n 40/3, rounded
  assert vj.levels(30, 70, 4, form="printed") == (30, 40, 50, 60)
  assert vj.levels(k=1) == (30,) and vj.levels(50, 50, 3) == (50, 50, 50)
  for args, kw, match in (((70, 30), {}, "inverted quality range"),
                          ((30, 70, 0), {}, "k must be an integer >= 1"),
                          ((30, 70, 2.5), {}, "k must be"),
                          ((0, 70), {}, "quality must be an integer in 1..100"),
                          ((30, 101), {}, "1..100"),
                          ((), {"form": "paper"}, "unknown form")):
    with pytest.raises(ValueError, match=match):
      vj.levels(*args, **kw)


def test_block_levels_hand_map():
  # 20x27: 3x4 blocks, the last row 4 pixels high and the last column 3 wide.
  m = np.zeros((20, 27), np.float32)
  m[0:8, 8:16] = 0.25           # k = 4: exactly 1/k -> level 0 (Sec. 2.4: [0, 1/k])
  m[0:8, 16:24] = 0.5           # exactly 2/k -> level 1 ((1/k, 2/k])
  m[8:16, 0:8] = 0.51           # -> level 2
  m[8:16, 8:16] = 1.0           # -> level 3
  m[16:20, 24:27] = 0.9         # partial corner block, 4x3 pixels: mean 0.9 -> level 3
  m[8, 16] = 1.0                # one hot pixel in an otherwise empty block
  four = (10, 20, 30, 40)
  got = jax.jit(functools.partial(vj.block_levels, qualities=four))(m)
  assert got.dtype == jnp.int32 and got.shape == (3, 4)
  expected = np.asarray([[0, 0, 1, 0],
                         [2, 3, 0, 0],        # the hot pixel: mean 1/64 -> level 0
                         [0, 0, 0, 3]])       # zero padding would give 0.9 * 12/64 -> 0
  np.testing.assert_array_equal(got, expected)
  maxed = vj.block_levels(m, four, pooling="max")
  assert maxed[1, 2] == 3 and maxed[2, 3] == 3 and maxed[0, 0] == 0
  # k = 5, values off the boundaries: 0.19 -> 0, 0.21 -> 1, 0.99 -> 4; outside [0, 1] clipped.
  np.testing.assert_array_equal(
      vj.block_levels(np.asarray([[0.19, 0.21, 0.99, 1.5, -0.5]], np.float32).repeat(8, 0)
                      .repeat(8, 1), vj.levels()), [[0, 1, 4, 4, 0]])


def test_block_levels_is_batch_polymorphic():
  maps = jax.random.uniform(jax.random.key(0), (2, 3, 21, 30))
  batched = jax.jit(functools.partial(vj.block_levels, qualities=vj.levels()))(maps)
  assert batched.shape == (2, 3, 3, 4)
  assert int(batched.min()) >= 0 and int(batched.max()) <= 4
  np.testing.assert_array_equal(batched[1, 2], vj.block_levels(maps[1, 2], vj.levels()))
  with pytest.raises(ValueError, match="float"):
    vj.block_levels(jnp.zeros((8, 8), jnp.int32), vj.levels())
  with pytest.raises(ValueError, match="unknown pooling"):
    vj.block_levels(maps, vj.levels(), pooling="median")


def test_select_blocks():
  rng = np.random.default_rng(0)
  stack = rng.integers(0, 256, (3, 2, 13, 19, 3), dtype=np.uint8)   # k=3, batch 2
  index = rng.integers(0, 3, (2, 2, 3)).astype(np.int32)             # ceil(13/8), ceil(19/8)
  got = jax.jit(vj.select_blocks)(stack, index)
  assert got.dtype == np.uint8 and got.shape == (2, 13, 19, 3)
  i, j = np.mgrid[:13, :19]
  for b in range(2):   # pixel (i, j) of image b from level index[b, i // 8, j // 8]
    np.testing.assert_array_equal(got[b], stack[index[b, i // 8, j // 8], b, i, j])
  with pytest.raises(ValueError, match="block_index must be"):
    vj.select_blocks(stack, index[:, :1])
  with pytest.raises(ValueError, match="integer block_index"):
    vj.select_blocks(stack, index.astype(np.float32))


def test_mosaic_blocks_are_the_level_jpegs_pixels(crop):
  qualities = vj.levels()
  hb, wb = 8, 10                                        # ceil(61/8), ceil(75/8)
  index = (np.arange(hb)[:, None] + np.arange(wb)[None, :]) % 5   # every level, edges included
  got = vj.mosaic(crop, index, qualities)
  assert got.dtype == np.uint8 and got.shape == crop.shape
  references = [_pillow_jpeg(crop, q) for q in qualities]
  for bi in range(hb):
    for bj in range(wb):
      block = (slice(8 * bi, 8 * bi + 8), slice(8 * bj, 8 * bj + 8))
      np.testing.assert_array_equal(got[block], references[index[bi, bj]][block],
                                    err_msg=f"block ({bi}, {bj})")
  assert all(np.any(got != r) for r in references)      # a real mix of the five
  with pytest.raises(ValueError, match="block levels must lie in 0..4"):
    vj.mosaic(crop, index + 1, qualities)


def test_encode_variable_quality_is_a_standard_jpeg(medium):
  image, m = medium
  data = vj.encode_variable_quality(image, m, q_final=60)
  with Image.open(io.BytesIO(data)) as im:
    assert im.format == "JPEG" and im.size == (203, 181) and im.mode == "RGB"
    decoded = np.asarray(im)
    tables = im.quantization
  # The file's tables are those of a standard Pillow JPEG at Q_f = 60.
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "JPEG", quality=60)
  assert tables == Image.open(buf).quantization
  # Decoding it gives Pillow's JPEG of the mosaic at Q_f (Algorithm 1, line 6).
  index = vj.block_levels(m, vj.levels())
  np.testing.assert_array_equal(decoded, _pillow_jpeg(vj.mosaic(image, index, vj.levels()), 60))


def test_match_size_within_one_percent(medium):
  image, m = medium
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "JPEG", quality=50)
  target = buf.tell()
  data, q_final = vj.match_size(image, m, target)
  assert abs(len(data) - target) <= 0.01 * target
  assert data == vj.encode_variable_quality(image, m, q_final=q_final)
  assert np.asarray(Image.open(io.BytesIO(data))).shape == image.shape
  with pytest.raises(ValueError, match=r"closest is \d+ bytes at quality 100"):
    vj.match_size(image, m, 20 * target)
  with pytest.raises(ValueError, match=r"closest is \d+ bytes at quality 1$"):
    vj.match_size(image, m, 50)


def test_find_quality_handles_non_monotone_sizes():
  calls = []

  def size_of(q):                           # grows with q, but one dip at q = 80
    calls.append(q)
    return 500 if q == 80 else 1000 + 10 * q

  assert vj.find_quality(size_of, 500, tolerance=0.0) == 80     # only a full scan finds it
  assert len(calls) == len(set(calls)) == 100                  # each quality sized once
  # Several within tolerance: the closest wins (1000 + 10 q = 1503 -> q = 50 at 1500).
  assert vj.find_quality(lambda q: 1000 + 10 * q, 1503, tolerance=0.01) == 50
  with pytest.raises(ValueError, match="target_bytes > 0"):
    vj.find_quality(size_of, 0)


def test_bad_inputs(medium):
  image, m = medium
  for bad_image, bad_map, match in ((image[..., 0], m, "image must be RGB"),
                                    (image, m[:, :-1], "saliency_map must be float"),
                                    (image, (m * 255).astype(np.uint8), "must be float"),
                                    (image, m + 0.5, r"must lie in \[0, 1\]"),
                                    (image.astype(np.int32), m, "uint8 or float")):
    with pytest.raises(ValueError, match=match):
      vj.encode_variable_quality(bad_image, bad_map, q_final=50)
  with pytest.raises(ValueError, match="1..100"):
    vj.encode_variable_quality(image, m, q_final=0)
