"""Generic readers (class folders in a directory or zip, IDX), the cache, `load_images`."""

from __future__ import annotations

import gzip
import io
import pathlib
import zipfile

import numpy as np
import pytest
from PIL import Image

from jaxcomp import data
from jaxcomp.data import cache, readers


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def _tree(root: pathlib.Path, sizes=((8, 8), (8, 8), (8, 8))) -> dict[str, np.ndarray]:
  """A lossless class-folder tree: train/{b,a}, test/{a,b}; returns path -> pixels."""
  rng = np.random.default_rng(0)
  files = {}
  for i, (split, cls) in enumerate([("train", "b"), ("train", "a"), ("test", "a")]):
    image = rng.integers(0, 256, (*sizes[i], 3), dtype=np.uint8)
    files[f"{split}/{cls}/{i:04d}.png"] = image
  files["test/b/0009.png"] = rng.integers(0, 256, (*sizes[0], 3), dtype=np.uint8)
  for name, image in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(_png(image))
  (root / "train" / "a" / "notes.txt").write_text("not an image")
  return files


def test_class_folders_directory_and_zip_agree(tmp_path):
  files = _tree(tmp_path / "d")
  with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
    for name in files:
      zf.write(tmp_path / "d" / name, "top/" + name)   # a common top folder is allowed
  for path in (tmp_path / "d", tmp_path / "d.zip"):
    out = readers.read_class_folders(path, "train")
    np.testing.assert_array_equal(out["class_names"], ["a", "b"])   # sorted folder names
    np.testing.assert_array_equal(out["labels"], [0, 1])             # sorted paths: a/, b/
    np.testing.assert_array_equal(out["images"][0], files["train/a/0001.png"])
    np.testing.assert_array_equal(out["images"][1], files["train/b/0000.png"])
  with pytest.raises(FileNotFoundError, match=r"no images under 'valid/<class>/'.*\['test', 'train'\]"):
    readers.read_class_folders(tmp_path / "d", "valid")


def test_ragged_sizes_and_image_folder_dataset(tmp_path, data_config):
  files = _tree(tmp_path / "d", sizes=((80, 100), (90, 70), (60, 60)))
  out = readers.read_class_folders(tmp_path / "d", "train")
  assert "images" not in out and out["shapes"].tolist() == [[90, 70, 3], [80, 100, 3]]
  ds = data.get_dataset(data_config(name="image_folder", path=str(tmp_path / "d")), "train")
  np.testing.assert_array_equal(ds[0]["image"], files["train/a/0001.png"])
  # Stored sizes vary and exceed 64 px: ImageNet-style defaults (224, inception, 0.875).
  assert ds.image_shape == (224, 224, 3) and ds.default_augment == "inception"
  assert ds.eval_crop == 0.875
  images, labels = ds.read(np.array([0, 1]))
  assert images.shape == (2, 224, 224, 3) and labels.tolist() == [0, 1]
  # Statistics of the training split: exact mean of all its pixels.
  both = np.concatenate([files["train/a/0001.png"].reshape(-1, 3),
                         files["train/b/0000.png"].reshape(-1, 3)]) / 255
  np.testing.assert_allclose(ds.mean, both.mean(0), atol=1e-12)
  np.testing.assert_allclose(ds.std, both.std(0), atol=1e-12)


def test_pack_mixes_grey_into_rgb():
  grey, rgb = np.full((2, 2, 1), 9, np.uint8), np.zeros((2, 2, 3), np.uint8)
  out = readers.pack([grey, rgb], np.array([0, 1]))
  assert out["images"].shape == (2, 2, 2, 3) and (out["images"][0] == 9).all()


def test_decode_grey_and_palette():
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
  assert readers.decode_image(_png(grey)).shape == (3, 4, 1)
  pal = Image.fromarray(np.zeros((2, 2, 3), np.uint8)).convert("P")
  buf = io.BytesIO()
  pal.save(buf, format="PNG")
  assert readers.decode_image(buf.getvalue()).shape == (2, 2, 3)


def _write_idx(path: pathlib.Path, array: np.ndarray, code: int) -> None:
  header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">i4").tobytes()
  body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
  path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


def test_idx_roundtrip_and_split_names(tmp_path, data_config):
  images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
  labels = np.array([0, 2, 1, 2, 0], np.uint8)
  _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 0x08)
  _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, 0x08)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:2], 0x08)   # MNIST test name
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:2], 0x08)
  floats = np.linspace(-1, 1, 6).reshape(2, 3)
  _write_idx(tmp_path / "f.idx", floats, 0x0E)
  np.testing.assert_array_equal(readers.read_idx(tmp_path / "f.idx"), floats)
  ds = data.get_dataset(data_config(name="idx", path=str(tmp_path)), "train")
  assert len(ds) == 5 and ds.num_classes == 3 and ds.image_shape == (4, 3, 1)
  np.testing.assert_array_equal(ds.source.images[..., 0], images)
  test = data.get_dataset(data_config(name="idx", path=str(tmp_path)), "test")
  assert len(test) == 2 and test.mean == ds.mean   # statistics come from "train"
  with pytest.raises(FileNotFoundError, match="valid-images-idx3-ubyte.gz"):
    data.get_dataset(data_config(name="idx", path=str(tmp_path)), "valid")
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an IDX file"):
    readers.read_idx(tmp_path / "bad")


def test_cache_builds_once_and_tracks_the_source(tmp_path):
  src = tmp_path / "src"
  src.write_text("v1")
  calls = []

  def build():
    calls.append(1)
    return {"x": np.arange(3)}

  for _ in range(2):
    out = cache.cached_arrays(tmp_path / "c", "t", cache.file_key([src]), build)
    np.testing.assert_array_equal(out["x"], [0, 1, 2])
  assert len(calls) == 1
  src.write_text("v2 longer")          # size (and mtime) change -> new key, rebuilt
  cache.cached_arrays(tmp_path / "c", "t", cache.file_key([src]), build)
  assert len(calls) == 2
  assert not list((tmp_path / "c").glob("*.tmp"))   # written atomically


def test_load_images(tmp_path, shared_data):
  kodak = data.load_images(data.sample_kodak_dir())
  assert [k.shape for k in kodak] == [(512, 768, 3)] * 2 and kodak[0].dtype == np.uint8
  # The packaged PNGs are the shared ones, byte for byte decoded the same.
  np.testing.assert_array_equal(kodak[0], np.asarray(Image.open(shared_data / "kodak" / "kodim15.png")))
  assert data.kodak_dir() == shared_data / "kodak"
  with pytest.raises(FileNotFoundError, match="no images"):
    data.load_images(tmp_path)
