"""Host-side augmentation (numpy, so not jitted) and the jit-able `normalize`."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp.data import transforms


def _images(b=5, h=6, w=7, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (b, h, w, c), dtype=np.uint8)


def test_pad_crop_flip_matches_per_image_reference():
  images = _images()
  rng = np.random.default_rng(1)
  offsets = rng.integers(0, 9, (5, 2))
  flips = np.array([True, False, True, False, True])
  out = transforms.pad_crop_flip(images, offsets, flips, pad=4)
  # Reference: the definition, one image at a time (zero pad, slice, mirror).
  for i in range(5):
    p = np.pad(images[i], ((4, 4), (4, 4), (0, 0)))
    ref = p[offsets[i, 0]:offsets[i, 0] + 6, offsets[i, 1]:offsets[i, 1] + 7]
    np.testing.assert_array_equal(out[i], ref[:, ::-1] if flips[i] else ref)
  assert out.dtype == np.uint8 and out.shape == images.shape


def test_pad_crop_identity_offsets_and_bad_offsets():
  images = _images()
  same = transforms.pad_crop_flip(images, np.full((5, 2), 4), np.zeros(5, bool))
  np.testing.assert_array_equal(same, images)   # offset (pad, pad) = no shift
  with pytest.raises(ValueError, match="offsets"):
    transforms.pad_crop_flip(images, np.full((5, 2), 9), np.zeros(5, bool))


def test_flip():
  images = _images()
  flips = np.array([True, False, False, True, False])
  out = transforms.flip(images, flips)
  np.testing.assert_array_equal(out[flips], images[flips][:, :, ::-1])
  np.testing.assert_array_equal(out[~flips], images[~flips])


def test_inception_boxes_inside_image_with_area_and_aspect_in_range():
  n = 500
  sizes = np.random.default_rng(0).integers(50, 400, (n, 2))
  boxes = transforms.inception_boxes(sizes, np.random.default_rng(1).random((n, 10, 4)))
  top, left, ch, cw = boxes.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + ch <= sizes[:, 0]).all() and (left + cw <= sizes[:, 1]).all()
  frac = ch * cw / (sizes[:, 0] * sizes[:, 1])
  # Rounding the sides to integers moves area and aspect by at most ~1 pixel per side
  # (sides >= sqrt(0.08 * 50 * 50) ~ 14 px, so < 10 % relative).
  assert frac.min() > 0.08 * 0.85 and frac.max() <= 1.0
  aspect = cw / ch
  assert aspect.min() > 0.75 * 0.9 and aspect.max() < 4 / 3 * 1.1


def test_inception_boxes_fallback_is_centred():
  # Attempts with area fraction 1 and extreme aspect never fit a 10x100 image:
  # u = (1, 1, ...) -> area 1.0, aspect 4/3 -> width 115 > 100.
  boxes = transforms.inception_boxes(np.array([[10, 100]]), np.ones((1, 10, 4)) * 0.999999)
  # Fallback (torchvision): ratio 10 > 4/3 -> width = round(10 * 4/3) = 13, centred.
  np.testing.assert_array_equal(boxes, [[0, (100 - 13) // 2, 10, 13]])


def test_center_boxes_imagenet_eval():
  # 0.875 of the shorter side 256 is 224: the "resize 256, centre-crop 224" crop.
  boxes = transforms.center_boxes(np.array([[256, 320], [400, 256]]), (224, 224), fraction=0.875)
  np.testing.assert_array_equal(boxes, [[16, 48, 224, 224], [88, 16, 224, 224]])
  with pytest.raises(ValueError, match="fraction"):
    transforms.center_boxes(np.array([[8, 8]]), (4, 4), fraction=0)


def test_crop_resize():
  image = _images(1, 40, 50)[0]
  out = transforms.crop_resize(image, np.array([5, 6, 20, 30]), (10, 15))
  # Reference: Pillow's own crop, then bilinear resize (the definition).
  ref = np.asarray(Image.fromarray(image).crop((6, 5, 36, 25)).resize((15, 10), Image.BILINEAR))
  np.testing.assert_array_equal(out, ref)
  # A crop of the output size is an exact slice; a constant image stays constant.
  np.testing.assert_array_equal(transforms.crop_resize(image, np.array([3, 4, 10, 15]), (10, 15)),
                                image[3:13, 4:19])
  flat = np.full((30, 30, 1), 77, np.uint8)
  out = transforms.crop_resize(flat, np.array([2, 2, 25, 25]), (7, 7))
  assert out.shape == (7, 7, 1) and (out == 77).all()


def test_normalize_jit():
  images = np.array([[[[0, 255, 51]]]], np.uint8)
  out = jax.jit(transforms.normalize, static_argnums=(1, 2))(images, (0.5, 0.5, 0.2), (0.5, 0.25, 0.2))
  # (x / 255 - mean) / std by hand: (0 - .5) / .5, (1 - .5) / .25, (.2 - .2) / .2.
  np.testing.assert_allclose(out[0, 0, 0], [-1.0, 2.0, 0.0], atol=1e-6)
  assert out.dtype == np.float32
