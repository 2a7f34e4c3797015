"""Training of the MS-ROI network on multi-label composites of CIFAR-10 objects on photos.

    python -m jaxcomp.msroi.train_network --workdir /tmp/msroi --steps 2000 \
        --output jaxcomp/msroi/weights/msroi-cifar10-composites.npz

The thesis trains on Caltech-256 (Sec. 2.5), which is not available offline. The
labelled data here is CIFAR-10 (JPEG q75, `cifar10_jpeg75`), one centred object
per 32x32 image, which teaches neither localisation nor several objects per
image. So each training image is a composite: a random crop of one of the
photos of the shared data (a real, cluttered scene), rescaled to `canvas`
pixels, with 1 to `max_objects` CIFAR-10 objects of distinct classes pasted at
random positions and sizes (a `scale` fraction of the canvas; at most 25 %
overlap of the smaller box), their edges feathered; the labels are the pasted
classes (multi-hot), learned with the sigmoid loss (Eq. 2.6). With
`distractor_prob`, a patch cut from another photo is pasted in the same way
without a label, so that a pasted rectangle is not by itself evidence of a
class. Why it transfers to photos: the only label signal is the object
content against real photo backgrounds, and the global-average-pooled class
maps must fire where the object is and stay at zero on the scene around it,
which is what the MS-ROI map needs on a photograph (the classes are CIFAR-10's:
vehicles and animals). Caveat: the backgrounds may themselves show such
objects (photos of a tiger, a car) and are then wrongly labelled negative.

Held out: the composites for evaluation use the CIFAR-10 *test* images and
photos that training never sees (`HELD_OUT_PHOTOS`). Metrics: mean average
precision over classes, top-1 hit rate (the best-scoring class is among the
pasted ones), and localisation: the fraction of the saliency map's mass inside
the pasted boxes against the boxes' area fraction (and how often the map's
peak falls in a box).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import queue
import shlex
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from jaxcomp.msroi import maps, network

HELD_OUT_PHOTOS = 9           # the last 9 of the 49 photos (041.png ... 049.png)
BACKGROUND_SHORT_SIDE = 320   # photos are downscaled once to this short side


def load_backgrounds(folder: str | pathlib.Path) -> list[np.ndarray]:
  """The photos of `folder`, sorted by name, downscaled (Lanczos) to a short side of 320."""
  from jaxcomp.data import load_images  # noqa: PLC0415 (data sits above the models)
  out = []
  for im in load_images(folder):
    h, w = im.shape[:2]
    s = BACKGROUND_SHORT_SIDE / min(h, w)
    out.append(np.asarray(Image.fromarray(im).resize((round(w * s), round(h * s)),
                                                     Image.Resampling.LANCZOS)))
  return out


def _crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
  """A random square crop of `photo` (side uniform in [size, short side]) resized to `size`."""
  h, w = photo.shape[:2]
  side = int(rng.integers(min(size, h, w), min(h, w) + 1))
  y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
  crop = Image.fromarray(photo[y:y + side, x:x + side])
  return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))


def _feather(size: int, width: float) -> np.ndarray:
  """[size, size, 1] alpha: 1 inside, a linear ramp over `width` pixels at the edges."""
  d = np.minimum(np.arange(size) + 0.5, size - 0.5 - np.arange(size))
  d = np.minimum(d[:, None], d[None, :])
  return np.clip(d / max(width, 1e-6), 0.0, 1.0)[..., None]


def _place(rng: np.random.Generator, canvas: int, size: int, boxes: list) -> tuple[int, int]:
  """A top-left corner for a `size` box overlapping each box in `boxes` by < 25 %."""
  for _ in range(20):
    y, x = int(rng.integers(0, canvas - size + 1)), int(rng.integers(0, canvas - size + 1))
    ok = all(max(0, min(y + size, b[0] + b[2]) - max(y, b[0]))
             * max(0, min(x + size, b[1] + b[3]) - max(x, b[1]))
             < 0.25 * min(size, b[2]) * min(size, b[3]) for b in boxes)
    if ok:
      break
  return y, x


def composites(rng: np.random.Generator, objects: np.ndarray, labels: np.ndarray,
               backgrounds: Sequence[np.ndarray], *, n: int, num_classes: int, canvas: int = 96,
               max_objects: int = 3, scale: tuple[float, float] = (0.3, 0.7),
               distractor_prob: float = 0.5) -> dict[str, np.ndarray]:
  """`n` multi-label composites (module docstring).

  Args:
    rng: numpy generator (the only source of randomness).
    objects: uint8 [N, h, w, 3] object images; labels: int [N] in [0, num_classes).
    backgrounds: uint8 [h_i, w_i, 3] photos, each at least `canvas` pixels high and wide.
    n, num_classes, canvas: output count, classes, canvas side in pixels.
    max_objects: objects per image, uniform in [1, max_objects], distinct classes.
    scale: object side as a fraction of the canvas, uniform in this range.
    distractor_prob: probability of an unlabelled photo patch.

  Returns:
    "images" uint8 [n, canvas, canvas, 3], "targets" float32 [n, num_classes]
    (multi-hot), "boxes" int32 [n, max_objects, 4] (y, x, height, width; -1 rows
    for absent objects).
  """
  by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
  images = np.empty((n, canvas, canvas, 3), np.uint8)
  targets = np.zeros((n, num_classes), np.float32)
  all_boxes = np.full((n, max_objects, 4), -1, np.int32)
  for i in range(n):
    img = _crop(rng, backgrounds[rng.integers(len(backgrounds))], canvas).astype(np.float32)
    patches = []
    if rng.random() < distractor_prob:
      patches.append((None, backgrounds[rng.integers(len(backgrounds))]))
    for c in rng.choice(num_classes, size=int(rng.integers(1, max_objects + 1)), replace=False):
      patches.append((int(c), objects[rng.choice(by_class[c])]))
    boxes, labelled = [], 0
    for c, source in patches:
      size = int(round(rng.uniform(*scale) * canvas))
      if c is None:
        patch = _crop(rng, source, size)
      else:
        patch = np.asarray(Image.fromarray(source).resize((size, size), Image.Resampling.BICUBIC))
        if rng.random() < 0.5:
          patch = patch[:, ::-1]
      y, x = _place(rng, canvas, size, boxes)
      alpha = _feather(size, 0.1 * size)
      region = img[y:y + size, x:x + size]
      img[y:y + size, x:x + size] = alpha * patch + (1.0 - alpha) * region
      if c is not None:
        all_boxes[i, labelled] = (y, x, size, size)
        targets[i, c] = 1.0
        labelled += 1
      boxes.append((y, x, size, size))
    images[i] = np.clip(np.round(img), 0, 255).astype(np.uint8)
  return {"images": images, "targets": targets, "boxes": all_boxes}


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Per-class average precision, `sum_n (R_n - R_{n-1}) P_n` over the ranking by score.

  Args:
    scores: [N, C] float; targets: [N, C] in {0, 1}.

  Returns:
    [C] float64 (NaN for a class without positives).
  """
  order = np.argsort(-scores, axis=0, kind="stable")
  hits = np.take_along_axis(targets, order, axis=0)
  precision = np.cumsum(hits, axis=0) / np.arange(1, len(hits) + 1)[:, None]
  positives = hits.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return (precision * hits).sum(axis=0) / positives


def box_masks(boxes: np.ndarray, size: int) -> np.ndarray:
  """bool [n, size, size]: the union of each image's boxes ([n, k, 4] y, x, h, w; -1 = none)."""
  yy = np.arange(size)[None, None, :, None]
  xx = np.arange(size)[None, None, None, :]
  y, x, h, w = (boxes[..., i][..., None, None] for i in range(4))
  inside = (yy >= y) & (yy < y + h) & (xx >= x) & (xx < x + w) & (h > 0)
  return inside.any(axis=1)


def evaluate(variables: Any, data: dict[str, np.ndarray], *, batch_size: int = 100
             ) -> dict[str, float]:
  """Held-out multi-label and localisation metrics of an MS-ROI network (module docstring).

  Localisation is averaged over the images whose map is not all zero ("*_empty_maps":
  the fraction that is; "threshold" selects no class when no logit exceeds 0).
  """
  model = network.from_variables(variables)
  logits_fn = jax.jit(lambda v, x: model.apply(v, x)[0])
  map_fns = {m: jax.jit(lambda v, x, m=m: maps.saliency_map(x, variables=v, method=m))
             for m in ("top5", "threshold")}
  logits, saliency = [], {m: [] for m in map_fns}
  for s in range(0, len(data["images"]), batch_size):
    x = jnp.asarray(data["images"][s:s + batch_size], jnp.float32) / 255.0
    logits.append(np.asarray(logits_fn(variables, x)))
    for m, fn in map_fns.items():
      saliency[m].append(np.asarray(fn(variables, x)))
  logits, targets = np.concatenate(logits), data["targets"]
  inside = box_masks(data["boxes"], data["images"].shape[1])
  out = {"mAP": float(np.nanmean(average_precision(logits, targets))),
         "top1_hit_rate": float(targets[np.arange(len(logits)), logits.argmax(-1)].mean()),
         "label_accuracy": float(((logits > 0) == (targets > 0)).mean()),
         "box_area_fraction": float(inside.mean())}
  for m, parts in saliency.items():
    s = np.concatenate(parts)
    mass = s.sum(axis=(1, 2))
    some = mass > 0                              # an all-zero map (no class selected) has no mass
    frac = (s * inside).sum(axis=(1, 2))[some] / mass[some]
    peak = s.reshape(len(s), -1).argmax(-1)
    hit = inside.reshape(len(s), -1)[np.arange(len(s)), peak][some]
    out[f"{m}_empty_maps"] = float(1.0 - some.mean())
    out[f"{m}_mass_in_boxes"] = float(frac.mean()) if some.any() else float("nan")
    out[f"{m}_peak_in_boxes"] = float(hit.mean()) if some.any() else float("nan")
  return out


def _prefetch(make: Callable[[], Any], size: int = 2) -> Iterator[Any]:
  """`make()` results computed ahead in a daemon thread (composites overlap the steps)."""
  q: queue.Queue = queue.Queue(size)
  threading.Thread(target=lambda: [q.put(make()) for _ in iter(int, 1)], daemon=True).start()
  while True:
    yield q.get()


def _loss(model: network.MSROINet, params: Any, batch_stats: Any, batch: dict[str, jax.Array]
          ) -> tuple[jax.Array, Any]:
  """Sigmoid cross-entropy (Eq. 2.6, sign fixed) on the composites plus the plain objects.

  The BatchNorm running statistics come from the composites only.
  """
  def bce(images, targets):
    (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats},
                                       images.astype(jnp.float32) / 255.0, train=True,
                                       mutable=["batch_stats"])
    return optax.sigmoid_binary_cross_entropy(logits, targets).mean(), updates["batch_stats"]

  loss, stats = bce(batch["images"], batch["targets"])
  if "plain_images" in batch:
    loss = loss + bce(batch["plain_images"], batch["plain_targets"])[0]
  return loss, stats


def _sources(dataset: str, data_path: str, photos: str | pathlib.Path, held_out_photos: int
             ) -> tuple[Any, Any, list[np.ndarray], list[np.ndarray]]:
  """(train split, test split, training backgrounds, held-out backgrounds)."""
  from jaxcomp import config_lib, data as data_lib  # noqa: PLC0415 (above the models)
  config = config_lib.base_config().data
  config.name, config.path = dataset, data_path
  train_ds, test_ds = (data_lib.get_dataset(config, s) for s in ("train", "test"))
  photos_all = load_backgrounds(photos)
  if not 0 < held_out_photos < len(photos_all):
    raise ValueError(f"held_out_photos must be in [1, {len(photos_all) - 1}] for "
                     f"{len(photos_all)} photos, got {held_out_photos}")
  return train_ds, test_ds, photos_all[:-held_out_photos], photos_all[-held_out_photos:]


def evaluate_weights(path: str | pathlib.Path, *, photos: str | pathlib.Path,
                     dataset: str = "cifar10_jpeg75", data_path: str = "",
                     held_out_photos: int = HELD_OUT_PHOTOS) -> dict[str, float]:
  """`evaluate` of a weights file on the held-out composites its training run used."""
  variables, meta = network.load_weights(path)
  _, test_ds, _, held_bg = _sources(dataset, data_path, photos, held_out_photos)
  held_out = composites(np.random.default_rng(meta["seed"] + 1), test_ds.source.images,
                        test_ds.source.labels, held_bg, n=meta.get("num_eval", 1000),
                        num_classes=meta["num_classes"], canvas=meta["canvas"],
                        max_objects=meta["max_objects"])
  return evaluate(variables, held_out)


def train(*, workdir: str | pathlib.Path, photos: str | pathlib.Path, steps: int = 2000,
          batch_size: int = 32, canvas: int = 96, learning_rate: float = 2e-3,
          weight_decay: float = 1e-4, widths: tuple[int, ...] = (8, 16, 32, 64, 128),
          class_features: int = 4, max_objects: int = 3, num_eval: int = 1000, seed: int = 0,
          log_every: int = 50, dataset: str = "cifar10_jpeg75", data_path: str = "",
          held_out_photos: int = HELD_OUT_PHOTOS, plain_batch_size: int = 64
          ) -> tuple[dict, dict[str, Any]]:
  """Trains an `MSROINet` on composites; returns `(variables, metadata with metrics)`.

  The objects come from `dataset` (a jaxcomp.data name; its "train" split for
  training, "test" for the held-out composites), the backgrounds from the
  photos of `photos` (the last `held_out_photos` held out). Each step also
  sees `plain_batch_size` whole objects at their own 32x32 size (one label
  each, randomly flipped): cheap (a ninth of a 96x96 composite's pixels), they
  teach the class features faster than the composites alone (measured: held-out
  mAP 0.27 after 200 composite-only steps, chance 0.2). Writes
  `workdir/log.jsonl` (one line per `log_every` steps) and `workdir/weights.npz`
  (float32) every 500 steps and at the end.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  train_ds, test_ds, train_bg, held_bg = _sources(dataset, data_path, photos, held_out_photos)
  num_classes = train_ds.num_classes
  held_out = composites(np.random.default_rng(seed + 1), test_ds.source.images,
                        test_ds.source.labels, held_bg, n=num_eval, num_classes=num_classes,
                        canvas=canvas, max_objects=max_objects)
  rng = np.random.default_rng(seed)
  model = network.MSROINet(num_classes=num_classes, widths=tuple(widths),
                           class_features=class_features, batch_norm=True)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, canvas, canvas, 3)))
  params, batch_stats = variables["params"], variables["batch_stats"]
  prior = np.mean([1, max_objects]) / num_classes       # the mean fraction of positive labels
  params = {**params, "offset": jnp.full((num_classes,), np.log(prior / (1 - prior)))}
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(200, steps // 10),
                                                steps)
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    (loss, batch_stats), grads = jax.value_and_grad(
        lambda p: _loss(model, p, batch_stats, batch), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  def inference() -> dict:
    return network.fold_batch_norm({"params": params, "batch_stats": batch_stats})

  meta = {"architecture": "MSROINet", "num_classes": num_classes, "widths": list(widths),
          "class_features": class_features, "max_objects": max_objects,
          "training_norm": "BatchNorm after each trunk conv, folded into the convs (inference: "
                           "conv -> relu only)",
          "class_names": list(train_ds.class_names), "seed": seed, "steps": steps,
          "num_eval": num_eval,
          # The network's input short side recommended for photos (`saliency_map`): of full
          # size, 2 x and 1 x the canvas, 2 x gave the most object-like maps on Kodak.
          "short_side": 2 * canvas,
          "batch_size": batch_size, "plain_batch_size": plain_batch_size, "canvas": canvas,
          "learning_rate": learning_rate, "weight_decay": weight_decay,
          "data": f"{dataset} train objects on crops of the first {len(train_bg)} photos of "
                  f"{photos} (composites, jaxcomp.msroi.train_network); held out: its test "
                  f"objects on the last {held_out_photos} photos"}
  log = open(workdir / "log.jsonl", "a")  # noqa: SIM115 (kept open for the whole run)
  start, losses = time.time(), []
  objects, labels = train_ds.source.images, train_ds.source.labels
  eye = np.eye(num_classes, dtype=np.float32)

  def make_batch() -> dict[str, np.ndarray]:
    batch = composites(rng, objects, labels, train_bg, n=batch_size, num_classes=num_classes,
                       canvas=canvas, max_objects=max_objects)
    if plain_batch_size:
      pick = rng.integers(0, len(labels), plain_batch_size)
      flip = rng.random(plain_batch_size) < 0.5
      batch["plain_images"] = np.where(flip[:, None, None, None], objects[pick, :, ::-1],
                                       objects[pick])
      batch["plain_targets"] = eye[labels[pick]]
    del batch["boxes"]
    return batch

  batches = _prefetch(make_batch)
  for i in range(1, steps + 1):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, next(batches))
    losses.append(float(loss))
    if not np.isfinite(losses[-1]):
      raise FloatingPointError(f"loss is {losses[-1]} at step {i}")
    if i % log_every == 0 or i == steps:
      line = {"step": i, "loss": float(np.mean(losses)), "seconds": round(time.time() - start, 1)}
      losses = []
      if i % 500 == 0 or i == steps:
        line.update(evaluate(inference(), held_out))
        network.save_weights(workdir / "weights.npz", inference(), dtype="float32", **meta)
      print(json.dumps(line), flush=True)
      log.write(json.dumps(line) + "\n")
      log.flush()
  log.close()
  meta["held_out"] = line
  return inference(), meta


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog="python -m jaxcomp.msroi.train_network",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", default="", help="run directory (required unless --evaluate)")
  p.add_argument("--evaluate", default="", metavar="WEIGHTS",
                 help="only print the held-out metrics of this weights .npz")
  p.add_argument("--output", default="", help="weights .npz to write (float16)")
  p.add_argument("--photos", default="../shared/data/photos")
  p.add_argument("--dataset", default="cifar10_jpeg75", help="a jaxcomp.data dataset name")
  p.add_argument("--data-path", default="", help="its data.path (default: the shared data)")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--plain-batch-size", type=int, default=64)
  p.add_argument("--canvas", type=int, default=96)
  p.add_argument("--learning-rate", type=float, default=2e-3)
  p.add_argument("--widths", default="8,16,32,64,128")
  p.add_argument("--class-features", type=int, default=4)
  p.add_argument("--num-eval", type=int, default=1000)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if args.evaluate:
    print(json.dumps(evaluate_weights(args.evaluate, photos=args.photos, dataset=args.dataset,
                                      data_path=args.data_path), indent=1))
    return 0
  if not args.workdir:
    p.error("--workdir is required for training")
  variables, meta = train(
      workdir=args.workdir, photos=args.photos, steps=args.steps, batch_size=args.batch_size,
      canvas=args.canvas, learning_rate=args.learning_rate,
      plain_batch_size=args.plain_batch_size,
      widths=tuple(int(w) for w in args.widths.split(",")), class_features=args.class_features,
      num_eval=args.num_eval, seed=args.seed, dataset=args.dataset, data_path=args.data_path)
  meta["command"] = shlex.join(["python", "-m", "jaxcomp.msroi.train_network", *argv])
  if args.output:
    network.save_weights(args.output, variables, dtype="float16", **meta)
  return 0


if __name__ == "__main__":
  sys.exit(main())
