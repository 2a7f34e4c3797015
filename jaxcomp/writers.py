"""What a run leaves in its workdir: metrics (JSON lines + TensorBoard), JSON files, plots.

Every file is written to a temporary name and renamed into place, so a crash
never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import sys
import tempfile
from typing import Any, Callable, Mapping

import numpy as np


def _jsonable(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  if hasattr(value, "tolist"):  # jax arrays
    return np.asarray(value).tolist()
  return value


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


_UMASK = _umask()   # read once: setting it is process-wide


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` to `path` through a temporary file and `os.replace`.

  The file gets the permissions of the file it replaces, or those `open` would
  give a new one (0666 less the umask), not the temporary file's 0600.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_UMASK
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Atomically writes `obj` as indented JSON."""
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def report_main(compute: Callable[[], dict[str, Any]], *, out: str | None = None,
                plot: Callable[[dict[str, Any], str], Any] | None = None,
                plot_path: str | None = None) -> int:
  """The tail of a report command line: compute the report, write it as JSON to `out`
  (atomically) and draw it to `plot_path`, print it; exit status 2 with a one-line
  error when the inputs are missing or invalid (FileNotFoundError, ValueError)."""
  try:
    report = compute()
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = json.dumps(report, indent=2, default=float)
  if out:
    write_atomic(out, text + "\n")
  if plot_path and plot is not None:
    plot(report, plot_path)
  print(text)
  return 0


def pyplot() -> Any:
  """`matplotlib.pyplot` on the non-interactive Agg backend (imported on first use)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> pathlib.Path:
  """Writes a matplotlib figure as a PNG at `path` atomically, then closes it."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  pyplot().close(fig)
  write_atomic(path, buf.getvalue())
  return pathlib.Path(path)


def plot_tables(panels: list[tuple[str, Any]], path: str | os.PathLike, *,
                value_format: str = "{:.0f}", panel_size: float = 3.2, fontsize: float = 6,
                title_size: float = 9, dpi: int = 110) -> pathlib.Path:
  """Heat maps of 8x8 tables (quantisation steps, sensitivities) side by side, each
  value written in its cell; `panels` is [(title, table [8, 8])]."""
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(panel_size * len(panels), panel_size),
                           squeeze=False)
  for ax, (title, table) in zip(axes[0], panels):
    t = np.asarray(table)
    ax.imshow(t, cmap="viridis")
    for (i, j), v in np.ndenumerate(t):
      ax.text(j, i, value_format.format(v), ha="center", va="center", fontsize=fontsize,
              color="w")
    ax.set_title(title, fontsize=title_size)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  return save_figure(fig, path, dpi=dpi)


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` lines to `metrics.jsonl` and TensorBoard.

  Only process 0 writes (multi-host runs log once). A run resumed from the
  checkpoint of step `resume_step` first drops the rows written after that step
  (they belong to the interrupted continuation, which is computed again) and a
  torn last line, so the file never holds a step twice.
  """

  def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if enabled and self.path.exists():
      keep = [r for r in read_metrics(workdir) if resume_step is not None
              and r["step"] <= resume_step]
      write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split}
    row.update({k: _jsonable(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
    for k, v in metrics.items():
      if np.ndim(v) == 0 and isinstance(_jsonable(v), (int, float)):
        self._tb.add_scalar(f"{split}/{k}", float(_jsonable(v)), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """All rows of `metrics.jsonl` (empty if there is none); a torn line (a crash
  while appending) is skipped."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict) and "step" in row and "split" in row:
      rows.append(row)
  return rows


def plot_metrics(workdir: str | os.PathLike, *, keys: tuple[str, ...] = ("loss", "accuracy")
                 ) -> pathlib.Path | None:
  """Plots train and eval curves of `keys` into `workdir/plots.png`."""
  rows = read_metrics(workdir)
  if not rows:
    return None
  plt = pyplot()
  keys = tuple(k for k in keys if any(k in r for r in rows))
  fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(5 * max(len(keys), 1), 3.5),
                           squeeze=False)
  for ax, key in zip(axes[0], keys):
    for split in ("train", "eval"):
      pts = [(r["step"], r[key]) for r in rows if r["split"] == split and key in r]
      if pts:
        ax.plot(*zip(*pts), marker="o" if split == "eval" else None, label=split)
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.legend()
  fig.tight_layout()
  return save_figure(fig, pathlib.Path(workdir) / "plots.png", dpi=100)
