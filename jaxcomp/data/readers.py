"""Generic readers of local image data: class folders (in a directory or a zip), IDX files.

Class folders: `[<prefix>/]<split>/<class>/<file>` with image files (.jpg,
.jpeg, .png, .bmp, .gif, .webp, .tif, .tiff); labels are the indices of the
sorted class-folder names found under any split of the same prefix (so train
and test agree), examples are in sorted path order. This fits
`cifar10_jpeg75.zip` and any user's folder laid out like torchvision's
`ImageFolder` with one folder per split.

IDX (LeCun's MNIST format): `<split>-images-idx3-ubyte[.gz]` and
`<split>-labels-idx1-ubyte[.gz]` in one folder; the split "test" also finds
the MNIST/Fashion-MNIST name "t10k".
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pathlib
import zipfile
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from jaxcomp.data.cache import Arrays

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_SPLIT_ALIASES = {"test": ("test", "t10k")}


def decode_image(data: bytes) -> np.ndarray:
  """Decodes an encoded image to uint8 [h, w, 1] (grey) or [h, w, 3] (anything else, as RGB)."""
  with Image.open(io.BytesIO(data)) as im:
    if im.mode not in ("L", "RGB"):
      im = im.convert("RGB")
    a = np.asarray(im)
  return a[..., None] if a.ndim == 2 else a


@contextlib.contextmanager
def open_container(path: pathlib.Path) -> Iterator[tuple[list[str], Callable[[str], bytes]]]:
  """(image files as sorted '/'-separated relative paths, a reader of one) of a zip or directory.

  Raises:
    FileNotFoundError: `path` is neither.
  """
  if path.is_dir():
    names = [os.path.relpath(os.path.join(d, f), path).replace(os.sep, "/")
             for d, _, files in os.walk(path) for f in files]
    yield sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES)), \
        lambda m: (path / m).read_bytes()
  elif zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:   # parsing 60,000 entries takes a second: open once
      names = [n for n in zf.namelist() if n.lower().endswith(IMAGE_SUFFIXES)]
      yield sorted(names), zf.read
  else:
    raise FileNotFoundError(f"{path} is neither a zip file nor a directory")


def pack(images: list[np.ndarray], labels: np.ndarray) -> Arrays:
  """Arrays for `dataset.ArraySource` ("images") or, for mixed sizes, `RaggedSource`.

  Grey images are repeated to RGB when the set mixes grey and colour.
  """
  if len({im.shape[-1] for im in images}) > 1:
    images = [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in images]
  out = {"labels": np.asarray(labels, np.int32)}
  if len({im.shape for im in images}) == 1:
    out["images"] = np.stack(images)
    flat = out["images"].reshape(-1, images[0].shape[-1])
  else:
    out["shapes"] = np.array([im.shape for im in images], np.int64)
    out["offsets"] = np.concatenate([[0], np.cumsum([im.size for im in images])]).astype(np.int64)
    out["pixels"] = np.concatenate([im.reshape(-1) for im in images])
    flat = out["pixels"].reshape(-1, images[0].shape[-1])
  out["mean"], out["std"] = channel_stats(flat)
  return out


def channel_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation per channel of uint8 pixels [n, C], scaled to [0, 1].

  Exact, from the 256-bin histogram of each channel.
  """
  values = np.arange(256) / 255
  mean, std = [], []
  for ch in range(pixels.shape[-1]):
    p = np.bincount(pixels[:, ch], minlength=256) / max(len(pixels), 1)
    m = p @ values
    mean.append(m)
    std.append(np.sqrt(max(p @ values**2 - m * m, 0.0)))
  return np.array(mean), np.array(std)


def read_class_folders(path: pathlib.Path, split: str) -> Arrays:
  """Decodes split `split` of a class-folder zip or directory (module docstring).

  Returns:
    `pack(...)` arrays plus "class_names" (unicode [K]).

  Raises:
    FileNotFoundError: no `<split>/<class>/<image>` under `path`.
  """
  with open_container(path) as (members, read):
    parts = [m.split("/") for m in members]
    mine = [p for p in parts if len(p) >= 3 and p[-3] == split]
    if not mine:
      splits = sorted({p[-3] for p in parts if len(p) >= 3})
      raise FileNotFoundError(f"no images under '{split}/<class>/' in {path} "
                              f"(splits found: {splits or 'none'})")
    prefixes = {tuple(p[:-3]) for p in mine}
    if len(prefixes) > 1:
      raise ValueError(f"{path} holds split {split!r} under several folders: {sorted(prefixes)}")
    prefix = prefixes.pop()
    class_names = sorted({p[-2] for p in parts if len(p) >= 3 and tuple(p[:-3]) == prefix})
    label_of = {c: i for i, c in enumerate(class_names)}
    images = [decode_image(read("/".join(p))) for p in mine]
  out = pack(images, np.array([label_of[p[-2]] for p in mine]))
  out["class_names"] = np.array(class_names)
  return out


def read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads an IDX file (optionally gzip), e.g. MNIST's `train-images-idx3-ubyte.gz`.

  Returns:
    The array, with the dims and dtype of the header, native byte order.
  """
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
  ndim = data[3]
  dims = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, 4))
  dtype = np.dtype(_IDX_DTYPES[data[2]])
  if len(data) != 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize:
    raise ValueError(f"{path}: {len(data)} bytes do not match the IDX header dims {dims}")
  array = np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(dims)
  return array.astype(dtype.newbyteorder("="))


def idx_files(folder: pathlib.Path, split: str) -> tuple[pathlib.Path, pathlib.Path]:
  """The (images, labels) IDX files of `split` in `folder` (module docstring names).

  Raises:
    FileNotFoundError: naming the file names looked for.
  """
  tried = []
  for name in _IDX_SPLIT_ALIASES.get(split, (split,)):
    for suffix in (".gz", ""):
      pair = (folder / f"{name}-images-idx3-ubyte{suffix}",
              folder / f"{name}-labels-idx1-ubyte{suffix}")
      if all(p.is_file() for p in pair):
        return pair
      tried += [str(p) for p in pair]
  raise FileNotFoundError(f"IDX files of split {split!r} not found; looked for {', '.join(tried)}")


def read_idx_split(folder: pathlib.Path, split: str) -> Arrays:
  """Images uint8 [N, H, W, 1] and labels of an IDX pair, as `pack(...)` arrays."""
  image_path, label_path = idx_files(folder, split)
  images, labels = read_idx(image_path), read_idx(label_path)
  if images.dtype != np.uint8 or images.ndim not in (3, 4) or labels.shape != images.shape[:1]:
    raise ValueError(f"{image_path}: expected uint8 [N, H, W(, C)] images and [N] labels, "
                     f"got {images.dtype} {images.shape} and {labels.shape}")
  images = images[..., None] if images.ndim == 3 else images
  out = {"images": images, "labels": labels.astype(np.int32)}
  out["mean"], out["std"] = channel_stats(images.reshape(-1, images.shape[-1]))
  return out


def load_images(path: str | os.PathLike) -> list[np.ndarray]:
  """The images of a folder (PNG, JPEG, ...; not recursive), sorted by file name.

  For codec evaluation and training data (`../shared/data/kodak`, `photos`,
  `sample_kodak_dir()`).

  Returns:
    uint8 [h, w, 3] arrays (grey and palette images converted to RGB).

  Raises:
    FileNotFoundError: the folder is missing or holds no image.
  """
  folder = pathlib.Path(path)
  files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
      if folder.is_dir() else []
  if not files:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
  images = [decode_image(f.read_bytes()) for f in files]
  return [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in images]
