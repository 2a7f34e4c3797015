"""Table 2.1 and Fig. 2.3 of thesis 001 (Ch. 2): standard JPEG vs MS-ROI JPEG at equal size.

For each image: the standard Pillow JPEG (4:2:0) at quality Q (50 in the thesis),
and the MS-ROI JPEG (`variable_jpeg.match_size`) whose Q_f makes it the same size
within +-1 %. Both are scored against the original with PSNR, PSNR-S, SSIM and
MS-SSIM (`jaxcomp.metrics`), on RGB and on the luma of a 4:2:0 frame
(`metrics.luma_420`, BT.601 studio range, cropped to a multiple of 16: what VQMT
measured for Table 2.1). PSNR-S is PSNR over the salient region, defined as the
pixels whose saliency is >= `threshold` (0.5 by default; the thesis does not give
its rule). MS-SSIM needs a short side above 160 pixels (5 scales); smaller images
get None.

Saliency maps come from a *map function* `images -> maps` (float [B, H, W, 3] in
[0, 1] -> [B, H, W] in [0, 1]): `map_function("network")` is MS-ROI's
(`jaxcomp.msroi.maps.saliency_map`, imported only when asked for),
`map_function("center")` a fixed centre-bias map (`center_map`) for runs without
the network.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import metrics
from jaxcomp.codecs.jpeg_files import decode_jpeg, encode_jpeg, to_uint8
from jaxcomp.msroi import variable_jpeg

MapFunction = Callable[[jax.Array], jax.Array]
SALIENT_THRESHOLD = 0.5
SPACES = ("rgb", "luma")
MAPS = ("network", "center")


def center_map(height: int, width: int, *, sigma: float = 0.25) -> np.ndarray:
  """A centre-bias saliency map: `exp(-((y - cy)^2 / (sigma H)^2 + (x - cx)^2 / (sigma W)^2) / 2)`.

  (cy, cx) is the image centre and sigma a fraction of each side; divided by its
  maximum, so it is 1 at the centre. A content-blind stand-in for MS-ROI's map.

  Returns:
    [height, width] float32 in (0, 1].
  """
  y = (np.arange(height) - (height - 1) / 2) / (sigma * height)
  x = (np.arange(width) - (width - 1) / 2) / (sigma * width)
  m = np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))
  return (m / m.max()).astype(np.float32)


def center_bias_maps(images: jax.Array) -> jax.Array:
  """Map function of `center_map`: [B, H, W, C] -> [B, H, W] float32 (content ignored)."""
  b, h, w = images.shape[:3]
  return jnp.broadcast_to(jnp.asarray(center_map(h, w)), (b, h, w))


def map_function(name: str) -> MapFunction:
  """The map function `name`: "network" or "center" (module docstring).

  "network" is `jaxcomp.msroi.maps.saliency_map` with its shipped weights, imported here
  only; "center" is `center_bias_maps`.
  """
  if name == "network":
    from jaxcomp.msroi.maps import saliency_map  # noqa: PLC0415 (loads the network only when used)
    return saliency_map
  if name == "center":
    return center_bias_maps
  raise ValueError(f"unknown map {name!r}; expected one of {MAPS}")


def compute_map(map_fn: MapFunction, image: np.ndarray) -> np.ndarray:
  """The saliency map of one uint8 [H, W, 3] image: float32 [H, W], clipped to [0, 1]."""
  images = jnp.asarray(to_uint8(image)[None], jnp.float32) / 255.0
  m = np.asarray(map_fn(images), np.float32)
  if m.shape != (1,) + image.shape[:2]:
    raise ValueError(f"the map function returned {m.shape}, expected {(1,) + image.shape[:2]}")
  return np.clip(m[0], 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("space",))
def _scores(original: jax.Array, decoded: jax.Array, mask: jax.Array, *,
            space: str) -> dict[str, jax.Array]:
  x, y, mask = original[None], decoded[None], mask[None]
  if space == "luma":
    x, y = metrics.luma_420(x, max_val=255.0), metrics.luma_420(y, max_val=255.0)
    mask = mask[:, :x.shape[1], :x.shape[2]]
  out = {"psnr": metrics.psnr(x, y, max_val=255.0),
         "psnr_s": metrics.psnr_s(x, y, mask, max_val=255.0),
         "ssim": metrics.ssim(x, y, max_val=255.0)}
  if metrics.ms_ssim_scales(x.shape[1], x.shape[2]) >= len(metrics.MS_SSIM_WEIGHTS):
    out["ms_ssim"] = metrics.ms_ssim(x, y, max_val=255.0)
  return {k: v[0] for k, v in out.items()}


def quality(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray, *,
            space: str = "rgb") -> dict[str, float | None]:
  """PSNR, PSNR-S, SSIM, MS-SSIM of a decoded uint8 image (dB for PSNRs).

  Args:
    original, decoded: [H, W, 3] uint8.
    mask: [H, W] bool, the salient region of PSNR-S.
    space: "rgb" (channels averaged) or "luma" (`metrics.luma_420`, the mask cropped alike).

  Returns:
    {"psnr", "psnr_s", "ssim", "ms_ssim"}; "ms_ssim" None when the (cropped) image
    is too small for 5 scales, "psnr_s" NaN for an empty region.
  """
  if space not in SPACES:
    raise ValueError(f"unknown space {space!r}; expected one of {SPACES}")
  scores = jax.device_get(_scores(jnp.asarray(original, jnp.float32),
                                  jnp.asarray(decoded, jnp.float32), jnp.asarray(mask, bool),
                                  space=space))
  return {k: float(scores[k]) if k in scores else None
          for k in ("psnr", "psnr_s", "ssim", "ms_ssim")}


def compare(image: np.ndarray, saliency_map: np.ndarray, *, quality_std: int = 50,
            qualities: Sequence[int] | None = None, tolerance: float = 0.01,
            threshold: float = SALIENT_THRESHOLD, pooling: str = "mean"
            ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """One image's row of Table 2.1: standard JPEG at `quality_std` vs MS-ROI JPEG at its size.

  Args:
    image: [H, W, 3] uint8.
    saliency_map: [H, W] float in [0, 1].
    quality_std: the standard JPEG's quality Q (its size is the target).
    qualities, pooling: the MS-ROI levels and block pooling (`variable_jpeg`).
    tolerance: relative size tolerance of the match (0.01).
    threshold: saliency at or above which a pixel counts for PSNR-S.

  Returns:
    (row, decoded): row = {"height", "width", "salient_fraction",
    "standard": {"quality", "bytes", "rgb": {...}, "luma": {...}}, "msroi": {...}}
    (the MS-ROI "quality" is its Q_f; "rgb" and "luma" hold `quality`'s scores);
    decoded = {"standard", "msroi"} uint8 [H, W, 3].
  """
  image = to_uint8(image)
  standard = encode_jpeg(image, quality=quality_std)
  msroi, q_final = variable_jpeg.match_size(image, saliency_map, len(standard),
                                            tolerance=tolerance, qualities=qualities,
                                            pooling=pooling)
  mask = np.asarray(saliency_map) >= threshold
  decoded = {"standard": decode_jpeg(standard), "msroi": decode_jpeg(msroi)}
  row: dict[str, Any] = {"height": image.shape[0], "width": image.shape[1],
                         "salient_fraction": float(mask.mean())}
  for name, data in (("standard", standard), ("msroi", msroi)):
    row[name] = {"quality": quality_std if name == "standard" else q_final, "bytes": len(data),
                 **{s: quality(image, decoded[name], mask, space=s) for s in SPACES}}
  return row, decoded


def _mean(rows: list[Any]) -> Any:
  """Leaf-wise mean of equally structured rows (None if any row has None; NaNs ignored)."""
  if isinstance(rows[0], dict):
    return {k: _mean([r[k] for r in rows]) for k in rows[0]}
  if any(r is None for r in rows):
    return None
  values = np.asarray(rows, np.float64)
  return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def evaluate(images: Sequence[np.ndarray], names: Sequence[str], map_fn: MapFunction, *,
             quality_std: int = 50, qualities: Sequence[int] | None = None,
             tolerance: float = 0.01, threshold: float = SALIENT_THRESHOLD,
             pooling: str = "mean", figure_images: int = 0
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Table 2.1 over a set of images (per image and mean).

  Args:
    images: uint8 [H, W, 3] each (any sizes).
    names: one per image.
    map_fn: the saliency map function (`map_function`).
    quality_std, qualities, tolerance, threshold, pooling: as `compare`.
    figure_images: keep the arrays of the first n images for `figure`.

  Returns:
    (report, examples): report = {"settings", "images": [row + "image"], "mean"};
    examples = [{"name", "image", "saliency", "standard", "msroi"}] for `figure`.
  """
  qualities = variable_jpeg.levels() if qualities is None else tuple(qualities)
  rows, examples = [], []
  for image, name in zip(images, names):
    saliency = compute_map(map_fn, image)
    row, decoded = compare(image, saliency, quality_std=quality_std, qualities=qualities,
                           tolerance=tolerance, threshold=threshold, pooling=pooling)
    rows.append({"image": name, **row})
    if len(examples) < figure_images:
      examples.append({"name": name, "image": to_uint8(image), "saliency": saliency, **decoded})
  settings = {"quality_std": quality_std, "levels": list(qualities), "tolerance": tolerance,
              "threshold": threshold, "pooling": pooling, "subsampling": "4:2:0"}
  mean = _mean([{k: v for k, v in r.items() if k != "image"} for r in rows]) if rows else {}
  return {"settings": settings, "images": rows, "mean": mean}, examples


def _crop_box(saliency: np.ndarray, side: int) -> tuple[int, int]:
  """Top-left corner of a `side` square centred on the map's centre of mass, inside the image."""
  h, w = saliency.shape
  total = saliency.sum()
  cy = (saliency.sum(axis=1) @ np.arange(h)) / total if total > 0 else h / 2
  cx = (saliency.sum(axis=0) @ np.arange(w)) / total if total > 0 else w / 2
  return (int(np.clip(round(cy - side / 2), 0, h - side)),
          int(np.clip(round(cx - side / 2), 0, w - side)))


def figure(examples: Sequence[dict[str, Any]], *, rows: Sequence[dict[str, Any]] = (),
           map_title: str = "MS-ROI map") -> bytes:
  """Fig. 2.3-like PNG: per image, the image, its map, and the same crop of both JPEGs.

  The crop is a square of a third of the short side centred on the map's centre of
  mass (outlined on the image). With `rows` (the report's rows of the same images),
  the crop titles give each file's size and PSNR-S (RGB). `map_title` heads the map column.

  Returns:
    The PNG file's bytes (written by the caller, so that no partial file is left).
  """
  import matplotlib  # noqa: PLC0415 (plotting only when asked for)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  from matplotlib.patches import Rectangle  # noqa: PLC0415

  fig, axes = plt.subplots(len(examples), 4, figsize=(12, 2.6 * len(examples)), squeeze=False)
  for i, ex in enumerate(examples):
    side = min(ex["image"].shape[:2]) // 3
    top, left = _crop_box(ex["saliency"], side)
    window = (slice(top, top + side), slice(left, left + side))
    row = rows[i] if i < len(rows) else None
    panels = [(ex["image"], ex["name"]), (ex["saliency"], map_title),
              (ex["standard"][window], "standard JPEG"), (ex["msroi"][window], "MS-ROI JPEG")]
    for j, (ax, (pixels, title)) in enumerate(zip(axes[i], panels)):
      ax.imshow(pixels, cmap="jet" if j == 1 else None, vmin=0, vmax=1 if j == 1 else None)
      if row is not None and j >= 2:
        r = row["standard" if j == 2 else "msroi"]
        title += f"\n{r['bytes']} B, PSNR-S {r['rgb']['psnr_s']:.2f} dB (Q {r['quality']})"
      ax.set_title(title, fontsize=8)
      ax.axis("off")
    axes[i][0].add_patch(Rectangle((left, top), side, side, fill=False, edgecolor="w", lw=1))
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  return buf.getvalue()
