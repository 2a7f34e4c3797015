"""Datasets derived from another source: transformed once and cached, subsets, unions.

A *derived* source (`compressed:`, `corrupted:`) reads a split of a base source,
transforms every image once (a codec, a corruption) and serves the results like
any other source. The transformed split is built in chunks of `CHUNK_SIZE`
images and cached; an interrupted build resumes at the first missing chunk and
ends with the same arrays as an uninterrupted one.

Cache layout, in `data.cache_dir` (default ~/.cache/jaxcomp), for a set whose
key (source, split, transform, weights digest, ...) hashes to `<digest>`:

  <tag>-<digest>.npz         the finished set: images, labels, per-image arrays
  <tag>-<digest>.json        its summary (mean bpp, PSNR, SSIM), printed when built
  <tag>-<digest>.parts/      while building: manifest.json and chunk-<k>.npz

Every file is written to a temporary name and renamed into place, so an error
leaves complete chunks (to resume from) and nothing half-written; the parts
folder is removed once the set is complete.

Subsets: a derived split keeps the examples `get_dataset` would keep of its base
(`data.num_train_examples` / `num_eval_examples`, the seeded `subset`), so a
small run transforms only those; `get_dataset`'s own subset of it is then the
identity. Two more prefixes registered here:

  subset:<n>:<source>     the seeded n-example subset of <source>'s training
                          split (other splits whole), e.g. inside a union;
  union:<a>|<b>[|...]     the training splits of the sources concatenated (the
                          thesis's joint top-2 set); other splits those of <a>.
                          Needs data.num_train_examples = 0 (subset the parts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pathlib
import re
import shutil
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp import metrics, writers
from jaxcomp.data.cache import DEFAULT_CACHE_DIR
from jaxcomp.data.dataset import DATASETS, ArraySource, ImageDataset, open_dataset, subset

CHUNK_SIZE = 2048          # images per cached chunk
BATCH_SIZE = 256           # images per jitted call (PSNR / SSIM, corruptions)
_VERSION = "1"

# (uint8 images [b, H, W, C] at positions start .. start + b - 1 of the split, start)
# -> {"images": uint8 [b, H, W, C], **per-image arrays [b]}.
TransformFn = Callable[[np.ndarray, int], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Transform:
  """What a derived source applies to its base.

  Attributes:
    key: everything the output depends on besides the base images (the spec, a
      digest of the codec's weights, the seed): part of the cache key.
    fn: the transform (`TransformFn`); deterministic given (images, start).
    rgb_only: it needs 3-channel images (checked before anything is built).
  """
  key: str
  fn: TransformFn
  rgb_only: bool = False


@dataclasses.dataclass(frozen=True)
class DerivedSource(ArraySource):
  """A transformed split in memory: images, labels, per-image arrays and the summary.

  Attributes:
    per_image: name -> [N] array: "psnr" and "ssim" against the base image, and
      for codecs "file_bits" and "payload_bits" (Sec. 3.2 of the thesis).
    summary: the set's means (`summarize`).
  """
  per_image: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def split_size(data_config: ml_collections.ConfigDict, split: str) -> int:
  """The subset size `get_dataset` applies to `split` (0: all)."""
  return (data_config.num_train_examples if split == data_config.train_split
          else data_config.num_eval_examples)


def base_split(data_config: ml_collections.ConfigDict, split: str, name: str) -> ImageDataset:
  """Split `split` of source `name` with the examples `get_dataset` keeps (its seeded subset)."""
  ds = open_dataset(data_config, split, name)
  n = split_size(data_config, split)
  return subset(ds, n) if n else ds


@jax.jit
def _quality(reference: jax.Array, images: jax.Array) -> dict[str, jax.Array]:
  x, y = reference.astype(jnp.float32) / 255.0, images.astype(jnp.float32) / 255.0
  return {"psnr": metrics.psnr(y, x), "ssim": metrics.ssim(y, x)}


def in_batches(fn: Callable[..., Any], *arrays: np.ndarray, start: int = 0,
               batch_size: int = BATCH_SIZE) -> Any:
  """`fn(*batches, start)` over fixed-size batches of `arrays`, results concatenated.

  Every call sees `batch_size` examples (the last batch padded with zeros, its
  padding dropped), so a jitted `fn` compiles once per example shape.

  Args:
    fn: `(*arrays [batch_size, ...], start_index) -> array or dict of arrays [batch_size, ...]`.
    arrays: equal-length arrays [N, ...].
    start: index of the first example in its set (batch k gets start + k batch_size).
    batch_size: examples per call.

  Returns:
    The results [N, ...] (numpy), concatenated.
  """
  n = len(arrays[0])
  outs = []
  for k in range(0, n, batch_size):
    pad = max(k + batch_size - n, 0)
    batch = [np.concatenate([a[k:k + batch_size], np.zeros((pad, *a.shape[1:]), a.dtype)])
             for a in arrays]
    outs.append(jax.tree.map(lambda v, m=batch_size - pad: np.asarray(v)[:m],
                             fn(*batch, start + k)))
  return jax.tree.map(lambda *v: np.concatenate(v), *outs)


def image_quality(reference: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
  """Per-image PSNR (dB; inf where identical) and SSIM of uint8 `images` against `reference`.

  Args:
    reference, images: uint8 [N, H, W, C] (H, W >= 11 for SSIM's window).

  Returns:
    {"psnr": float64 [N], "ssim": float64 [N]}.
  """
  out = in_batches(lambda x, y, _: _quality(x, y), reference, images)
  return {k: v.astype(np.float64) for k, v in out.items()}


def summarize(per_image: Mapping[str, np.ndarray], num_pixels: int) -> dict[str, float]:
  """Means over a set: "bpp" (payload bits / pixel), "file_bpp", "psnr", "ssim" (as present),
  and the standard deviation of each ("<name>_std")."""
  values = {"psnr": per_image.get("psnr"), "ssim": per_image.get("ssim")}
  if "payload_bits" in per_image:
    values["bpp"] = np.asarray(per_image["payload_bits"], np.float64) / num_pixels
    values["file_bpp"] = np.asarray(per_image["file_bits"], np.float64) / num_pixels
  out = {}
  for k, v in values.items():
    if v is not None:
      out[k], out[f"{k}_std"] = float(np.mean(v)), float(np.std(v))
  return out


def _save_npz(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  writers.write_atomic(path, buf.getvalue())


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def cache_stem(cache_dir: str, name: str, key: str) -> pathlib.Path:
  """`<cache_dir>/<tag>-<digest>`: the cache files of a derived set, without suffix."""
  folder = pathlib.Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
  tag = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
  return folder / f"{tag}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def build(stem: pathlib.Path, key: str, base: ImageDataset, transform: TransformFn, *,
          chunk_size: int | None = None
          ) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
  """The transformed set, from the cache or built (resuming from cached chunks).

  Args:
    stem: `cache_stem(...)`.
    key: the set's full key (kept in the manifest).
    base: the images to transform (`base.read`).
    transform: see `TransformFn`.
    chunk_size: images per chunk (None: `CHUNK_SIZE`); a build resumed with
      another size starts again.

  Returns:
    (arrays: "images", "labels" and the per-image arrays; summary; whether it was built now).
  """
  chunk_size = chunk_size or CHUNK_SIZE
  # Appended, not `with_suffix`: a stem may hold a "." ("noise_0.05-train-<digest>").
  final, summary_path, parts = (stem.with_name(stem.name + s) for s in (".npz", ".json", ".parts"))
  if final.is_file() and summary_path.is_file():
    return _load_npz(final), json.loads(summary_path.read_text()), False
  manifest = {"key": key, "num_examples": len(base), "chunk_size": chunk_size}
  if (parts / "manifest.json").is_file() and json.loads(
      (parts / "manifest.json").read_text()) != manifest:
    shutil.rmtree(parts)                 # chunks of another layout: start again
  parts.mkdir(parents=True, exist_ok=True)
  writers.write_json(parts / "manifest.json", manifest)
  starts = range(0, len(base), chunk_size)
  for k, start in enumerate(starts):
    path = parts / f"chunk-{k:05d}.npz"
    if path.is_file():
      continue
    images, labels = base.read(np.arange(start, min(start + chunk_size, len(base))))
    out = transform(images, start)
    if out["images"].shape != images.shape or out["images"].dtype != np.uint8:
      raise ValueError(f"transform returned {out['images'].dtype} {out['images'].shape} for "
                       f"uint8 {images.shape}")
    _save_npz(path, {**out, "labels": labels, **image_quality(images, out["images"])})
  chunks = [_load_npz(parts / f"chunk-{k:05d}.npz") for k in range(len(starts))]
  arrays = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
  h, w = arrays["images"].shape[1:3]
  per_image = {k: v for k, v in arrays.items() if k not in ("images", "labels")}
  summary = {"num_examples": len(base), **summarize(per_image, h * w)}
  _save_npz(final, arrays)
  writers.write_json(summary_path, summary)
  shutil.rmtree(parts, ignore_errors=True)
  return arrays, summary, True


def _describe(name: str, split: str, summary: Mapping[str, Any]) -> str:
  parts = [f"{summary['num_examples']} images"]
  if "bpp" in summary:
    parts.append(f"{summary['bpp']:.3f} bpp payload ({summary['file_bpp']:.3f} bpp file)")
  parts += [f"PSNR {summary['psnr']:.2f} dB", f"SSIM {summary['ssim']:.4f}"]
  return f"{name} [{split}]: " + ", ".join(parts)


def derived_dataset(data_config: ml_collections.ConfigDict, split: str, *, name: str,
                    base_name: str, transform: Transform, only_train: bool = False,
                    chunk_size: int | None = None) -> ImageDataset:
  """Split `split` of `base_name` passed through `transform`, cached.

  Args:
    data_config: `config.data` (path, data_dir, cache_dir, image_size and the subset sizes).
    split: the split.
    name: the derived source's full name (e.g. "compressed:cifar10_jpeg75:jpeg:20").
    base_name: the source it reads.
    transform: the transform and its key.
    only_train: transform `data.train_split` only; other splits are the base's.
    chunk_size: images per cached chunk (None: `CHUNK_SIZE`).

  Returns:
    An `ImageDataset` over a `DerivedSource` (its summary is printed when built),
    with the base's classes, statistics and augmentation, stored at the base's
    batch shape (`image_shape`).
  """
  base = base_split(data_config, split, base_name)
  if only_train and split != data_config.train_split:
    return base
  if transform.rgb_only and base.image_shape[-1] != 3:
    raise ValueError(f"{name} needs RGB images; {base_name} has {base.image_shape[-1]} channel(s)")
  c = data_config
  key = "|".join([_VERSION, name, split, transform.key, f"path={c.path}", f"data_dir={c.data_dir}",
                  f"image_size={c.image_size}", f"n={len(base)}",
                  "indices=" + ("all" if base.indices is None else
                                hashlib.sha256(base.indices.tobytes()).hexdigest())])
  arrays, summary, built = build(cache_stem(c.cache_dir, f"{name}-{split}", key), key, base,
                                 transform.fn, chunk_size=chunk_size)
  if built:
    print(_describe(name, split, summary), flush=True)
  per_image = {k: v for k, v in arrays.items() if k not in ("images", "labels")}
  source = DerivedSource(arrays["images"], arrays["labels"].astype(np.int32), per_image, summary)
  return dataclasses.replace(base, name=name, source=source, indices=None, eval_crop=1.0)


def split_right(rest: str, count: int, what: str, grammar: str) -> tuple[str, list[str]]:
  """`"a:b:c:d"`, 2 -> ("a:b", ["c", "d"]): the last `count` ':'-fields and the source before.

  Raises:
    ValueError: fewer fields, or an empty source; the message shows `grammar`.
  """
  fields = rest.split(":")
  if len(fields) <= count or not all(fields[-count:]) or not ":".join(fields[:-count]):
    raise ValueError(f"{what}: expected {grammar}, got {rest!r}")
  return ":".join(fields[:-count]), fields[-count:]


@DATASETS.register_prefix("subset:")
def subset_source(data_config: ml_collections.ConfigDict, split: str, rest: str
                  ) -> ImageDataset:
  """`subset:<n>:<source>`: the seeded n-example subset of the training split."""
  n, _, name = rest.partition(":")
  if not n.isdigit() or int(n) < 1 or not name:
    raise ValueError(f"subset: expected subset:<n>:<source> with n >= 1, got 'subset:{rest}'")
  ds = open_dataset(data_config, split, name)
  return dataclasses.replace(subset(ds, int(n)), name=f"subset:{rest}") \
      if split == data_config.train_split else ds


@DATASETS.register_prefix("union:")
def union_source(data_config: ml_collections.ConfigDict, split: str, rest: str) -> ImageDataset:
  """`union:<a>|<b>[|...]`: the training splits concatenated; other splits those of <a>."""
  names = rest.split("|")
  if len(names) < 2 or not all(names):
    raise ValueError(f"union: expected union:<source>|<source>[|...], got 'union:{rest}'")
  if split != data_config.train_split:
    return open_dataset(data_config, split, names[0])
  if data_config.num_train_examples:
    raise ValueError("union: sources need data.num_train_examples = 0 (get_dataset would take a "
                     "subset of the union); subset each part instead (subset:<n>:<source>)")
  parts = [open_dataset(data_config, split, n) for n in names]
  first = parts[0]
  for p in parts[1:]:
    if (p.image_shape, p.num_classes) != (first.image_shape, first.num_classes):
      raise ValueError(f"union: {p.name} ({p.image_shape}, {p.num_classes} classes) does not "
                       f"match {first.name} ({first.image_shape}, {first.num_classes} classes)")
  images, labels = zip(*(p.read(np.arange(len(p))) for p in parts))
  return dataclasses.replace(first, name=f"union:{rest}", indices=None, eval_crop=1.0,
                             source=ArraySource(np.concatenate(images), np.concatenate(labels)))
