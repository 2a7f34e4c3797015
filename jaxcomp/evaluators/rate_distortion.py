"""Rate-distortion evaluation of learned codecs on real bitstreams, against Pillow JPEG 4:2:0.

Rates are measured from the bytes (`.jcx` streams, whole JFIF files for JPEG),
distortion on the decoded uint8 images: PSNR and MS-SSIM (`jaxcomp.metrics`,
MS-SSIM only for images of at least 176 pixels a side). Per-image values and
their means (the Kodak convention of CompressAI and TFC).
"""

from __future__ import annotations

import io
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxcomp import metrics, writers
from jaxcomp.codecs import bitstream, compression

JPEG_QUALITIES = (2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 75, 90)


@jax.jit
def _quality(original: jax.Array, decoded: jax.Array) -> dict[str, jax.Array]:
  x, y = original[None] / 255.0, decoded[None] / 255.0
  out = {"psnr": metrics.psnr(x, y)[0]}
  if min(original.shape[:2]) >= 176:
    out["ms_ssim"] = metrics.ms_ssim(x, y)[0]
  return out


def quality(original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
  """PSNR (dB) and MS-SSIM of a uint8 reconstruction."""
  q = jax.device_get(_quality(jnp.asarray(original, jnp.float32),
                              jnp.asarray(decoded, jnp.float32)))
  return {k: float(v) for k, v in q.items()}


def _mean(rows: list[dict[str, Any]]) -> dict[str, float]:
  keys = [k for k in rows[0] if isinstance(rows[0][k], float) and all(k in r for r in rows)]
  return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def evaluate_model(model, params, images: Sequence[np.ndarray], names: Sequence[str], *,
                   name: str = "checkpoint") -> dict[str, Any]:
  """Compresses and decompresses every image; per-image bpp / PSNR / MS-SSIM / seconds.

  Each row also compares the stream with the likelihoods' estimate:
  `estimated_bpp` (`compression.estimate_bits`), `header_bytes`, and
  `payload_vs_estimate`, the relative excess `(8 (bytes - header) - estimate) / estimate`.
  """
  tables = compression.coding_tables(model, params)
  header_bytes = bitstream.header_size(name)
  rows = []
  for image, image_name in zip(images, names):
    t0 = time.perf_counter()
    data = compression.compress(model, params, image, name=name, tables=tables)
    t1 = time.perf_counter()
    decoded = compression.decompress(model, params, data, tables=tables)
    t2 = time.perf_counter()
    pixels = image.shape[0] * image.shape[1]
    estimate = sum(compression.estimate_bits(model, params, image).values())
    rows.append({"image": image_name, "bytes": len(data), "bpp": 8.0 * len(data) / pixels,
                 **quality(image, decoded), "encode_s": t1 - t0, "decode_s": t2 - t1,
                 "estimated_bpp": estimate / pixels, "header_bytes": header_bytes,
                 "payload_vs_estimate": 8.0 * (len(data) - header_bytes) / estimate - 1.0})
  return {"model": name, "images": rows, "mean": _mean(rows)}


def jpeg_curve(images: Sequence[np.ndarray], qualities: Sequence[int] = JPEG_QUALITIES
               ) -> list[dict[str, float]]:
  """Mean bpp / PSNR / MS-SSIM of Pillow JPEG 4:2:0 (`subsampling=2`) at each quality."""
  points = []
  for q in qualities:
    rows = []
    for image in images:
      buf = io.BytesIO()
      Image.fromarray(image).save(buf, "JPEG", quality=int(q), subsampling=2)
      decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
      rows.append({"bpp": 8.0 * buf.tell() / (image.shape[0] * image.shape[1]),
                   **quality(image, decoded)})
    points.append({"quality": int(q), **_mean(rows)})
  return points


def jpeg_bpp_at_psnr(jpeg: list[dict[str, float]], psnr: float) -> float | None:
  """JPEG's rate at a PSNR, log-linear interpolation on its curve (None outside it)."""
  p = np.asarray([j["psnr"] for j in jpeg])
  r = np.log([j["bpp"] for j in jpeg])
  order = np.argsort(p)
  if not p.min() <= psnr <= p.max():
    return None
  return float(np.exp(np.interp(psnr, p[order], r[order])))


def summarize(results: list[dict[str, Any]], jpeg: list[dict[str, float]]) -> dict[str, Any]:
  """Per-model JPEG rate at equal PSNR, and the BD-rate of the models' curve vs JPEG."""
  points = sorted((r["mean"]["bpp"], r["mean"]["psnr"], r["model"]) for r in results)
  out: dict[str, Any] = {"jpeg_bpp_at_equal_psnr": {
      name: jpeg_bpp_at_psnr(jpeg, psnr) for _, psnr, name in points}}
  try:
    out["bd_rate_vs_jpeg_percent"] = metrics.bd_rate(
        [j["bpp"] for j in jpeg], [j["psnr"] for j in jpeg],
        [p[0] for p in points], [p[1] for p in points])
  except ValueError as e:
    out["bd_rate_vs_jpeg_percent"] = None
    out["bd_rate_note"] = str(e)
  return out


def plot(results: list[dict[str, Any]], jpeg: list[dict[str, float]], path: str, *,
         title: str = "") -> None:
  """bpp-PSNR plot of the models (one curve) and JPEG 4:2:0, zoomed on the models' rates.

  The x axis ends at 2.5 times the models' highest rate (or JPEG's last point).
  """
  plt = writers.pyplot()

  fig, ax = plt.subplots(figsize=(6, 4.5))
  pts = sorted((r["mean"]["bpp"], r["mean"]["psnr"], r["model"]) for r in results)
  ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="jaxcomp learned codec")
  for bpp, psnr, name in pts:
    ax.annotate(name, (bpp, psnr), textcoords="offset points", xytext=(4, -10), fontsize=7)
  ax.plot([j["bpp"] for j in jpeg], [j["psnr"] for j in jpeg], "s--", label="JPEG 4:2:0 (Pillow)")
  x_max = 1.05 * min(max(j["bpp"] for j in jpeg), 2.5 * pts[-1][0])
  visible = [p[1] for p in pts] + [j["psnr"] for j in jpeg if j["bpp"] <= x_max]
  ax.set_xlim(0, x_max)
  ax.set_ylim(min(visible) - 0.5, max(visible) + 0.5)
  ax.set_xlabel("bits per pixel")
  ax.set_ylabel("PSNR (dB)")
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title(title)
  fig.tight_layout()
  writers.save_figure(fig, path, dpi=120)
