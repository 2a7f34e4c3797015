"""Tests of the `compressed:` sources: spec grammar, real bits, cache, resume, errors.

References: Pillow's files (`jpeg_files.encode_jpeg`, `entropy_coded_bytes`) and
`compression.compress` / `decompress` image by image. The base source is a
small `image_folder` of real CIFAR-10 (JPEG q75) sample images written as PNG.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp import data
from jaxcomp.codecs import bitstream, compression, jpeg_files, learned, pretrained
from jaxcomp.data import compressed, derived


def write_folder(root: pathlib.Path, sample: dict, per_class: dict[str, int]) -> pathlib.Path:
  """`root/<split>/<class>/<i>.png` from the packaged sample's first images of each class."""
  for split, k in per_class.items():
    ds = sample[split]
    labels = ds.source.labels if ds.indices is None else ds.source.labels[ds.indices]
    for c in range(10):
      folder = root / split / f"c{c}"
      folder.mkdir(parents=True)
      for j, i in enumerate(np.flatnonzero(labels == c)[:k]):
        Image.fromarray(ds[int(i)]["image"]).save(folder / f"{j}.png")
  return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory, sample) -> pathlib.Path:
  return write_folder(tmp_path_factory.mktemp("folder"), sample, {"train": 3, "test": 2})


@pytest.fixture
def config(data_config, folder, tmp_path):
  return lambda name, **kw: data_config(**{"name": name, "path": str(folder),
                                           "cache_dir": str(tmp_path), **kw})


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> pathlib.Path:
  """A small random bls2017 saved as a weights file (float16, as shipped models are)."""
  model = learned.build("bls2017", num_filters=8, num_latent=8)
  params = jax.jit(lambda k: model.init(k, np.zeros((1, 16, 16, 3), np.float32))["params"])(
      jax.random.key(0, impl="rbg"))
  path = tmp_path_factory.mktemp("weights") / "tiny.npz"
  pretrained.save(path, model, params, dtype="float16")
  return path


@pytest.mark.parametrize("rest,source,spec", [
    ("cifar10_jpeg75:jpeg:75", "cifar10_jpeg75", compressed.CodecSpec("jpeg", 75)),
    ("tfds:cifar10:jpeg:5:444", "tfds:cifar10", compressed.CodecSpec("jpeg", 5, "4:4:4")),
    ("tfds:cifar10:jpeg:100", "tfds:cifar10", compressed.CodecSpec("jpeg", 100)),
    ("a:b:bls2017:cifar10-bls-0.012", "a:b",
     compressed.CodecSpec("bls2017", model="cifar10-bls-0.012")),
    ("x:hyperprior:/runs/q3", "x", compressed.CodecSpec("hyperprior", model="/runs/q3")),
])
def test_parse_reads_the_spec_from_the_right(rest, source, spec):
  assert compressed.parse(rest) == (source, spec)
  assert f"{source}:{spec}" == rest


@pytest.mark.parametrize("rest,match", [
    ("cifar10_jpeg75:png:5", "unknown codec spec"), ("cifar10_jpeg75", "unknown codec spec"),
    ("cifar10_jpeg75:jpeg:0", "1..100"), ("cifar10_jpeg75:jpeg:101", "1..100"),
    ("cifar10_jpeg75:jpeg:x", "1..100"), ("jpeg:75", "unknown codec spec"),
    (":jpeg:75", "expected compressed:<source>"), ("c:bls2017:", "expected compressed:<source>"),
])
def test_bad_specs_show_the_grammar(rest, match):
  with pytest.raises(ValueError, match=match) as e:
    compressed.parse(rest)
  assert "jpeg:<Q>:444" in str(e.value) and "bls2017" in str(e.value)


@pytest.mark.parametrize("spec,subsampling", [("jpeg:20", "4:2:0"), ("jpeg:5:444", "4:4:4")])
def test_jpeg_bits_are_the_files(config, spec, subsampling, capsys):
  name = f"compressed:image_folder:{spec}"
  ds = data.get_dataset(config(name), "train")
  base = data.get_dataset(config("image_folder"), "train")
  assert len(ds) == 30 and ds.name == name and ds.num_classes == 10
  assert ds.image_shape == base.image_shape and ds.mean == base.mean
  quality = int(spec.split(":")[1])
  per_image = ds.source.per_image
  for i in (0, 17, 29):
    f = jpeg_files.encode_jpeg(base[i]["image"], quality=quality, subsampling=subsampling)
    assert per_image["file_bits"][i] == 8 * len(f)
    assert per_image["payload_bits"][i] == 8 * jpeg_files.entropy_coded_bytes(f)
    np.testing.assert_array_equal(ds[i]["image"], jpeg_files.decode_jpeg(f))
    assert ds[i]["label"] == base[i]["label"]
  s = ds.source.summary
  np.testing.assert_allclose(s["bpp"], per_image["payload_bits"].mean() / 1024)
  np.testing.assert_allclose(s["file_bpp"], per_image["file_bits"].mean() / 1024)
  assert 0 < s["bpp"] < s["file_bpp"] and 10 < s["psnr"] < 40 and 0 < s["ssim"] < 1
  assert f"{name} [train]: 30 images" in capsys.readouterr().out      # printed when built


def test_learned_bits_are_the_streams(config, weights):
  name = f"compressed:image_folder:bls2017:{weights}"
  ds = data.get_dataset(config(name), "test")
  base = data.get_dataset(config("image_folder"), "test")
  model, params, _ = pretrained.load_file(weights)
  header = bitstream.header_size("checkpoint")
  for i in (0, 19):
    stream = compression.compress(model, params, base[i]["image"])
    assert ds.source.per_image["file_bits"][i] == 8 * len(stream)
    assert ds.source.per_image["payload_bits"][i] == 8 * (len(stream) - header)
    np.testing.assert_array_equal(ds[i]["image"], compression.decompress(model, params, stream))


def test_cache_is_reused_and_a_rebuild_is_identical(config, tmp_path, capsys):
  name = "compressed:image_folder:jpeg:10"
  first = data.get_dataset(config(name), "train")
  capsys.readouterr()
  again = data.get_dataset(config(name), "train")
  assert capsys.readouterr().out == ""                    # read from the cache, not rebuilt
  finished = sorted(tmp_path.glob("compressed_image_folder_jpeg_10-train-*"))
  assert [p.suffix for p in finished] == [".json", ".npz"]
  for p in finished:
    p.unlink()
  rebuilt = data.get_dataset(config(name), "train")
  for ds in (again, rebuilt):
    np.testing.assert_array_equal(ds.source.images, first.source.images)
    np.testing.assert_array_equal(ds.source.labels, first.source.labels)
    for k, v in first.source.per_image.items():
      np.testing.assert_array_equal(ds.source.per_image[k], v)
  assert rebuilt.source.summary == first.source.summary


def test_an_interrupted_build_resumes_and_ends_identical(config, tmp_path, monkeypatch):
  monkeypatch.setattr(derived, "CHUNK_SIZE", 8)             # 30 images: chunks of 8, 8, 8, 6
  name = "compressed:image_folder:jpeg:30"
  spec_transform = compressed.transform(compressed.parse("image_folder:jpeg:30")[1])
  calls = []

  def failing(images, start):
    calls.append(start)
    if start == 16:
      raise RuntimeError("interrupted")
    return spec_transform.fn(images, start)

  monkeypatch.setattr(compressed, "transform", lambda spec: derived.Transform(
      spec_transform.key, failing))
  with pytest.raises(RuntimeError, match="interrupted"):
    data.get_dataset(config(name), "train")
  parts = list(tmp_path.glob("compressed_image_folder_jpeg_30-train-*.parts"))
  assert len(parts) == 1
  assert sorted(p.name for p in parts[0].iterdir()) == ["chunk-00000.npz", "chunk-00001.npz",
                                                      "manifest.json"]
  assert not list(tmp_path.glob("**/*.tmp")) and not list(tmp_path.glob("compressed*.npz"))
  monkeypatch.setattr(compressed, "transform", lambda spec: spec_transform)
  resumed = data.get_dataset(config(name), "train")
  assert calls == [0, 8, 16] and not parts[0].exists()
  monkeypatch.setattr(derived, "CHUNK_SIZE", 2048)          # one chunk, another cache
  whole = data.get_dataset(config(name, cache_dir=str(tmp_path / "other")), "train")
  np.testing.assert_array_equal(resumed.source.images, whole.source.images)
  for k, v in whole.source.per_image.items():
    np.testing.assert_array_equal(resumed.source.per_image[k], v)


def test_train_only_and_subsets(config, folder):
  c = config("compressed_train:image_folder:jpeg:40", num_train_examples=12,
             num_eval_examples=7)
  train, test = data.get_dataset(c, "train"), data.get_dataset(c, "test")
  base = {s: data.get_dataset(config("image_folder", num_train_examples=12, num_eval_examples=7),
                              s) for s in ("train", "test")}
  assert len(train) == 12 and train.name.startswith("compressed_train:")
  assert test.name == "image_folder" and len(test) == 7          # the original test images
  np.testing.assert_array_equal(test.read(np.arange(7))[0], base["test"].read(np.arange(7))[0])
  # The compressed training subset codes exactly the base's subset, in its order.
  images, labels = base["train"].read(np.arange(12))
  np.testing.assert_array_equal(train.source.labels, labels)
  np.testing.assert_array_equal(train.source.images,
                                jpeg_files.jpeg_roundtrip(images, quality=40)[0])


def test_missing_or_wrong_models_fail_clearly_and_write_nothing(config, tmp_path, weights):
  cases = [("compressed:image_folder:bls2017:no-such-model", FileNotFoundError,
            "no bls2017 model 'no-such-model'.*shipped model"),
           (f"compressed:image_folder:hyperprior:{weights}", ValueError,
            "is a bls2017 model, not hyperprior"),
           (f"compressed:image_folder:bls2017:{tmp_path / 'run'}", FileNotFoundError,
            "no config.json")]
  (tmp_path / "run").mkdir()
  for name, error, match in cases:
    with pytest.raises(error, match=match):
      data.get_dataset(config(name), "train")
  assert not list(tmp_path.glob("compressed*"))


def test_learned_codecs_refuse_grey_images(data_config, tmp_path, weights):
  c = data_config(name=f"compressed:fashion_mnist_idx:bls2017:{weights}", cache_dir=str(tmp_path),
                  num_eval_examples=4)
  with pytest.raises(ValueError, match="needs RGB images; fashion_mnist_idx has 1 channel"):
    data.get_dataset(c, "test")
  assert not list(tmp_path.glob("compressed*"))
