"""Compressed datasets: any source passed through a codec (compressed-training thesis, Ch. 3).

    compressed:<source>:<codec spec>         every split compressed
    compressed_train:<source>:<codec spec>   the training split compressed, the others
                                             original (train on compressed, test on
                                             original: the thesis's Fig. 3.4)

Codec specs (parsed from the right, so the source may contain ':', e.g.
`compressed:tfds:cifar10:jpeg:75`):

    jpeg:<Q>                    Pillow (libjpeg) JPEG at quality Q in 1..100, 4:2:0
    jpeg:<Q>:444                the same without chroma subsampling
    <architecture>:<model>      a learned codec: architecture bls2017 | factorized |
                                hyperprior (any registered `learned.CODECS`), model a
                                shipped model (`python -m jaxcomp.codecs list`), a
                                weights .npz file or a `jaxcomp.main` run directory

Each image is stored decoded, with the bits of its whole file and of its payload
only (JPEG: the entropy-coded scan data; learned codecs: the z and y streams),
measured from real files / streams (Sec. 3.2; `codecs.jpeg_files`,
`codecs.batch`). Sets are cached by (source, split, spec, a SHA-256 of the
codec's weights file or checkpoint parameters; `derived`), and their summary
(mean bpp, PSNR, SSIM) is printed when built and saved beside them; it is
`ds.source.summary`, the per-image values `ds.source.per_image`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib

import flax
import flax.linen as nn
import ml_collections
import numpy as np

from jaxcomp.codecs import batch as batch_coding
from jaxcomp.codecs import jpeg_files, learned, pretrained
from jaxcomp.codecs.compression import coding_tables
from jaxcomp.data import derived
from jaxcomp.data.dataset import DATASETS, ImageDataset

GRAMMAR = ("compressed:<source>:<codec spec>, codec spec = jpeg:<Q> (Q in 1..100, 4:2:0) | "
           "jpeg:<Q>:444 | <architecture>:<model> (architecture one of {archs}; model a shipped "
           "model, a weights .npz file or a jaxcomp.main run directory)")


def grammar() -> str:
  """The accepted names, with the registered learned-codec architectures."""
  return GRAMMAR.format(archs=", ".join(learned.CODECS.names()))


@dataclasses.dataclass(frozen=True)
class CodecSpec:
  """A parsed codec spec: `kind` "jpeg" (quality, subsampling) or an architecture (model)."""
  kind: str
  quality: int = 0
  subsampling: str = "4:2:0"
  model: str = ""

  def __str__(self) -> str:
    if self.kind == "jpeg":
      return f"jpeg:{self.quality}" + (":444" if self.subsampling == "4:4:4" else "")
    return f"{self.kind}:{self.model}"


def parse(rest: str) -> tuple[str, CodecSpec]:
  """`"<source>:<codec spec>"` -> (source, spec), reading the spec from the right.

  Raises:
    ValueError: not of that form (the message shows the grammar).
  """
  fields = rest.split(":")
  if len(fields) >= 4 and fields[-3] == "jpeg" and fields[-1] == "444":
    source, (_, q, _) = derived.split_right(rest, 3, "compressed", grammar())
    return source, CodecSpec("jpeg", _quality(q), "4:4:4")
  if len(fields) >= 3 and fields[-2] == "jpeg":
    source, (_, q) = derived.split_right(rest, 2, "compressed", grammar())
    return source, CodecSpec("jpeg", _quality(q))
  if len(fields) >= 3 and fields[-2] in learned.CODECS:
    source, (arch, model) = derived.split_right(rest, 2, "compressed", grammar())
    return source, CodecSpec(arch, model=model)
  raise ValueError(f"unknown codec spec in {rest!r}; expected {grammar()}")


def _quality(q: str) -> int:
  if not q.isdigit() or not 1 <= int(q) <= 100:
    raise ValueError(f"JPEG quality must be an integer in 1..100, got {q!r}; expected {grammar()}")
  return int(q)


def _params_digest(params: dict) -> str:
  h = hashlib.sha256()
  for path, value in sorted(flax.traverse_util.flatten_dict(params, sep="/").items()):
    h.update(path.encode())
    h.update(np.ascontiguousarray(value, np.float32).tobytes())
  return h.hexdigest()


def load_codec(architecture: str, model: str) -> tuple[nn.Module, dict, str, str]:
  """A learned codec by shipped name, weights file or run directory.

  Returns:
    (module, params, the name for the stream headers, a SHA-256 of the weights:
    of the file for a shipped model or weights file, of the parameters for a checkpoint).

  Raises:
    FileNotFoundError: no such model, file or run directory with a checkpoint.
    ValueError: the model is not of `architecture`.
  """
  path = pathlib.Path(model).expanduser()
  if model in pretrained.list_models():
    file = pretrained.WEIGHTS_DIR / f"{model}.npz"
    module, params, _ = pretrained.load_file(file)
    header_name, digest = model, hashlib.sha256(file.read_bytes()).hexdigest()
  elif path.is_file():
    module, params, _ = pretrained.load_file(path)
    header_name, digest = "checkpoint", hashlib.sha256(path.read_bytes()).hexdigest()
  elif path.is_dir():
    module, params, meta = pretrained.load_checkpoint(path)
    header_name, digest = "checkpoint", f"{_params_digest(params)}@{meta['step']}"
  else:
    raise FileNotFoundError(
        f"no {architecture} model {model!r}: not a shipped model "
        f"({', '.join(pretrained.list_models())}), a weights .npz file or a run directory")
  found = learned.architecture_of(module)
  if found != architecture:
    raise ValueError(f"{model!r} is a {found} model, not {architecture}")
  return module, params, header_name, digest


def _jpeg_transform(spec: CodecSpec) -> derived.Transform:
  def fn(images: np.ndarray, start: int) -> dict[str, np.ndarray]:
    del start
    decoded, file_bytes, payload_bytes = jpeg_files.jpeg_roundtrip(
        images, quality=spec.quality, subsampling=spec.subsampling)
    return {"images": decoded, "file_bits": 8 * file_bytes, "payload_bits": 8 * payload_bytes}
  return derived.Transform(f"{spec}|pillow", fn)


def _learned_transform(spec: CodecSpec) -> derived.Transform:
  model, params, header_name, digest = load_codec(spec.kind, spec.model)
  tables = coding_tables(model, params)

  def fn(images: np.ndarray, start: int) -> dict[str, np.ndarray]:
    del start
    coded = batch_coding.code(model, params, images, name=header_name, tables=tables)
    return {"images": coded.images, "file_bits": coded.file_bits,
            "payload_bits": coded.payload_bits}
  return derived.Transform(f"{spec}|{header_name}|{digest}", fn, rgb_only=True)


def transform(spec: CodecSpec) -> derived.Transform:
  """The derived-set transform of a codec spec."""
  return _jpeg_transform(spec) if spec.kind == "jpeg" else _learned_transform(spec)


def _factory(prefix: str, only_train: bool):
  def factory(data_config: ml_collections.ConfigDict, split: str, rest: str) -> ImageDataset:
    source, spec = parse(rest)
    return derived.derived_dataset(data_config, split, name=f"{prefix}{rest}", base_name=source,
                                   transform=transform(spec), only_train=only_train)
  factory.__doc__ = f"`{prefix}<source>:<codec spec>` (module docstring)."
  return factory


DATASETS.register_prefix("compressed:", _factory("compressed:", only_train=False))
DATASETS.register_prefix("compressed_train:", _factory("compressed_train:", only_train=True))
