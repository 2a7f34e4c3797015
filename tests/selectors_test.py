"""Tests of jaxcomp.selection: JPEG versions, HRS and the label-free selectors, the report.

References: top-k membership by numpy's stable argsort of -logits (equal logits
in increasing class index, as `jax.lax.top_k`); brute-force minima over the
versions in numpy; Pillow's own encoder/decoder and PNG writer; file payloads
counted by hand from the SOS header (JPEG) or decompressed with zlib (PNG).
"""

from __future__ import annotations

import io
import zipfile
import zlib

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp import selection
from jaxcomp.models import get_model

TRIALS = 200


def _np_ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Rank of the label from a stable descending sort, [V, B]."""
  order = np.argsort(-logits, axis=-1, kind="stable")
  return np.argmax(order == labels[None, :, None], axis=-1)


def _random_case(rng: np.random.Generator, *, v: int = 11, b: int = 16, k: int = 10):
  """Integer-valued logits (many ties), labels, whole-file and payload sizes."""
  logits = rng.integers(0, 4, (v, b, k)).astype(np.float32)
  labels = rng.integers(0, k, b)
  sizes = rng.integers(1, 6, (v, b))            # small range: many size ties too
  return logits, labels, sizes, sizes + rng.integers(0, 3, (v, b))


def _sos_payload(data: bytes) -> int:
  """Bytes after the (only) SOS header and before EOI: a baseline file's scan by hand."""
  sos = data.index(b"\xff\xda")
  assert data.endswith(b"\xff\xd9")
  return len(data) - 2 - (sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big"))


@pytest.fixture(scope="module")
def cifar_files(shared_data) -> list[bytes]:
  """The first 4 CIFAR-10 (JPEG q75) test files of the shared zip, as stored."""
  with zipfile.ZipFile(shared_data / "cifar10_jpeg75.zip") as z:
    names = [n for n in z.namelist() if n.startswith("test/") and n.endswith(".jpg")][:4]
    return [z.read(n) for n in names]


def test_label_ranks_match_stable_argsort():
  rng = np.random.default_rng(0)
  for _ in range(20):
    logits, labels, _, _ = _random_case(rng)
    got = jax.jit(selection.label_ranks)(logits, labels)
    np.testing.assert_array_equal(got, _np_ranks(logits, labels))
  # jax.lax.top_k puts equal logits in increasing class index: rank < k <=> in top_k.
  top = np.asarray(jax.lax.top_k(logits, 3)[1])
  np.testing.assert_array_equal((top == labels[None, :, None]).any(-1),
                                np.asarray(selection.label_ranks(logits, labels)) < 3)


def test_hrs_top_k_accuracy_dominates_every_fixed_version():
  """The paper's optimality, as a property over random trials with ties, k = 1..5."""
  rng = np.random.default_rng(1)
  hrs = jax.jit(selection.highest_rank_select)
  for _ in range(TRIALS):
    logits, labels, sizes, _ = _random_case(rng)
    pick = np.asarray(hrs(logits, labels, sizes))
    ranks = _np_ranks(logits, labels)
    chosen = ranks[pick, np.arange(len(labels))]
    np.testing.assert_array_equal(chosen, ranks.min(0))          # brute-force optimum
    for k in range(1, 6):
      fixed = (ranks < k).mean(axis=1)                           # [V]
      assert (chosen < k).mean() >= fixed.max()


def test_hrs_ties_go_to_the_smaller_file_then_the_lower_index():
  # 3 versions, 3 images, 3 classes; label 0 everywhere. Hand-worked choices:
  logits = np.array([
      [[2, 1, 0], [1, 2, 0], [0, 1, 2]],      # ranks of label 0: 0, 1, 2
      [[2, 1, 0], [2, 1, 0], [1, 2, 0]],      #                   0, 0, 1
      [[1, 2, 0], [2, 1, 0], [1, 2, 0]],      #                   1, 0, 1
  ], np.float32)
  labels = np.zeros(3, np.int32)
  sizes = np.array([[9, 9, 9], [5, 7, 4], [3, 7, 4]])
  # image 0: versions 0, 1 rank 0 -> smaller file (1; 2 ranks lower although smallest);
  # image 1: versions 1, 2 rank 0, equal sizes -> lower index 1;
  # image 2: versions 1, 2 rank 1, equal sizes -> 1.
  got = jax.jit(selection.highest_rank_select)(logits, labels, sizes)
  np.testing.assert_array_equal(got, [1, 1, 1])
  sizes[1, 1] = 8                              # now version 2 is the smaller of the tied two
  np.testing.assert_array_equal(jax.jit(selection.highest_rank_select)(logits, labels, sizes),
                                [1, 2, 1])


@pytest.mark.parametrize("name,ks", [("keep_top1", (1,)), ("keep_top5", (5,)),
                                     ("keep_both", (1, 5))])
def test_label_free_selectors_keep_the_originals_top_k_and_are_smallest(name, ks):
  rng = np.random.default_rng(2)
  select = jax.jit(getattr(selection, name))
  for _ in range(TRIALS // 4):
    logits, labels, sizes, _ = _random_case(rng, v=5, k=7)
    logits[1:] = np.where(rng.random(logits[1:].shape) < 0.8, logits[:1], logits[1:])
    pick = np.asarray(select(logits, sizes))
    order = np.argsort(-logits, axis=-1, kind="stable")            # [V, B, K]
    same = np.ones(sizes.shape, bool)
    for k in ks:
      tops = np.sort(order[..., :k], axis=-1)
      same &= (tops == tops[:1]).all(-1)
    cols = np.arange(sizes.shape[1])
    assert same[pick, cols].all()                                  # keeps top-k by construction
    smallest = np.where(same, sizes, 99).min(0)
    np.testing.assert_array_equal(sizes[pick, cols], smallest)
    first = np.argmax(same & (sizes == smallest), axis=0)
    np.testing.assert_array_equal(pick, first)
    # Hence the accuracies the selectors keep are exactly the original's.
    ranks = _np_ranks(logits, labels)
    for k in ks:
      assert ((ranks[pick, cols] < k) == (ranks[0] < k)).all()


def test_top5_is_compared_as_a_set_and_the_original_always_qualifies():
  base = np.arange(10, dtype=np.float32)[::-1]                     # top-5: 0, 1, 2, 3, 4
  reordered = base.copy()
  reordered[[0, 4]] = reordered[[4, 0]]                            # same set, other order
  changed = base.copy()
  changed[[4, 5]] = changed[[5, 4]]                                # class 5 replaces class 4
  logits = np.stack([base, reordered, changed])[:, None]          # [3, 1, 10]
  sizes = np.array([[10], [8], [1]])
  keep_top1, keep_top5, keep_both = (jax.jit(f) for f in (selection.keep_top1,
                                                          selection.keep_top5, selection.keep_both))
  assert keep_top5(logits, sizes)[0] == 1
  assert keep_top1(logits, sizes)[0] == 2                         # top-1 (class 0) unchanged
  assert keep_both(logits, sizes)[0] == 0                         # 1: top-1 now 4; 2: set changed
  # The original qualifies even when it is the largest file and nothing else does.
  assert keep_both(np.stack([base, changed[::-1]])[:, None], np.array([[9], [1]]))[0] == 0


def test_selection_report_hand_example():
  # V = 2 (original, q50), B = 2, K = 5; label 0.
  logits = np.array([[[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]],         # original: right, wrong
                     [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]], np.float32)  # q50: right, right
  labels = np.array([0, 0])
  files = np.array([[100, 300], [40, 60]])
  payloads = np.array([[80, 280], [20, 40]])
  r = selection.selection_report(logits, labels, files, payloads, (50,))
  assert list(r) == ["original", "q50", "hrs", "keep_top1", "keep_top5", "keep_both"]
  assert r["original"] == dict(top1=0.5, top5=1.0, cr_file=1.0, cr_payload=1.0)
  assert r["q50"] == dict(top1=1.0, top5=1.0, cr_file=400 / 100, cr_payload=360 / 60)
  assert r["hrs"] == r["q50"]                                     # q50 ranks >= and is smaller
  # keep_top1: image 0 keeps class 0 at q50 (40 B), image 1 changes -> original (300 B).
  assert r["keep_top1"] == dict(top1=0.5, top5=1.0, cr_file=400 / 340, cr_payload=360 / 300)
  table = selection.report_markdown(r)
  assert table.splitlines()[0].startswith("| input | top-1 (%)")
  assert "| q50 | 100.00 | 100.00 | +50.00 | 4.00 | 6.00 |" in table


def test_jpeg_versions_on_cifar_match_pillow(cifar_files):
  images = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in cifar_files])
  given = np.array([selection.file_sizes(f) for f in cifar_files]).T
  qualities = (95, 50, 10)
  v = selection.jpeg_versions(images, qualities, original_sizes=given)
  assert v.images.shape == (4,) + images.shape and v.images.dtype == np.uint8
  assert v.original_source == "given" and v.subsampling == "4:2:0" and v.qualities == qualities
  np.testing.assert_array_equal(v.images[0], images)
  np.testing.assert_array_equal(v.file_bytes[0], [len(f) for f in cifar_files])
  np.testing.assert_array_equal(v.payload_bytes[0], [_sos_payload(f) for f in cifar_files])
  for i, q in enumerate(qualities, start=1):
    for b, im in enumerate(images):
      buf = io.BytesIO()
      Image.fromarray(im).save(buf, format="JPEG", quality=q, subsampling=2)
      data = buf.getvalue()
      assert v.file_bytes[i, b] == len(data)
      assert v.payload_bytes[i, b] == _sos_payload(data)
      np.testing.assert_array_equal(v.images[i, b], np.asarray(Image.open(io.BytesIO(data))))
  assert (np.diff(v.file_bytes, axis=0)[1:] < 0).all()           # lower quality, smaller file


def test_jpeg_versions_grey_defaults_to_png_sizes(cifar_files):
  grey = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("L")) for f in cifar_files[:2]])
  v = selection.jpeg_versions(grey[..., None], (90,))
  assert v.original_source == "png" and v.subsampling == "none"
  assert v.images.shape == (2, 2, 32, 32, 1)
  for b, im in enumerate(grey):
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="PNG", compress_level=selection.PNG_COMPRESS_LEVEL)
    png = buf.getvalue()
    assert v.file_bytes[0, b] == len(png)
    # The payload is the IDAT zlib stream: it alone inflates to the filtered scanlines.
    idat = png.index(b"IDAT")
    stream = png[idat + 4:idat + 4 + v.payload_bytes[0, b]]
    assert len(zlib.decompress(stream)) == 32 * (1 + 32)
    with Image.open(io.BytesIO(png)) as decoded:
      np.testing.assert_array_equal(np.asarray(decoded), im)


def test_classify_versions_equals_per_version_apply():
  model = get_model("convnet", num_classes=10, depth=1, width=4, head_pool="global")
  versions = np.random.default_rng(3).integers(0, 256, (3, 5, 8, 8, 3), dtype=np.uint8)
  variables = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  got = selection.classify_versions(model.apply, variables, versions, batch_size=4)
  assert got.shape == (3, 5, 10) and got.dtype == np.float32
  apply = jax.jit(model.apply)
  want = np.stack([apply(variables, x.astype(np.float32) / 255)[0] for x in versions])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qualities,match", [
    ((100, 0), "1..100"), ((101,), "1..100"), ((90, 90), "strictly decreasing"),
    ((10, 50), "strictly decreasing"), ((90.0,), "integer"), ((), "at least one")])
def test_bad_qualities(qualities, match):
  with pytest.raises(ValueError, match=match):
    selection.jpeg_versions(np.zeros((1, 8, 8, 3), np.uint8), qualities)


def test_bad_inputs():
  images = np.zeros((2, 8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match="uint8"):
    selection.jpeg_versions(images.astype(np.float32))
  with pytest.raises(ValueError, match="C = 1 or 3"):
    selection.jpeg_versions(np.zeros((2, 8, 8, 2), np.uint8))
  with pytest.raises(ValueError, match="original_sizes"):
    selection.jpeg_versions(images, original_sizes=([10, 10, 10], [5, 5, 5]))
  with pytest.raises(ValueError, match="payload at most"):
    selection.jpeg_versions(images, original_sizes=([10, 10], [5, 11]))
  with pytest.raises(ValueError, match="JPEG and PNG"):
    selection.file_sizes(b"GIF89a")
  logits, labels = np.zeros((3, 2, 6), np.float32), np.zeros(2, np.int32)
  with pytest.raises(ValueError, match="sizes must be"):
    selection.highest_rank_select(logits, labels, np.ones((3, 3)))
  with pytest.raises(ValueError, match="labels must be"):
    selection.highest_rank_select(logits, np.zeros(3, np.int32), np.ones((3, 2)))
  with pytest.raises(ValueError, match="top-5 needs"):
    selection.keep_top5(logits[..., :4], np.ones((3, 2)))
  with pytest.raises(ValueError, match="V = 1 \\+ len"):
    selection.selection_report(logits, labels, np.ones((3, 2), int), np.ones((3, 2), int), (50,))
  with pytest.raises(ValueError, match="labels must be"):
    selection.selection_report(logits, np.array([0, 6]), np.ones((3, 2), int),
                               np.ones((3, 2), int), (50, 10))
  with pytest.raises(ValueError, match="sizes_payload"):
    selection.selection_report(logits, labels, np.ones((3, 2), int), np.zeros((3, 2), int),
                               (50, 10))
  with pytest.raises(ValueError, match="batch_size"):
    selection.classify_versions(lambda v, x: x, {}, np.zeros((1, 1, 2, 2, 3)), batch_size=0)
