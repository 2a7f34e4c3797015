"""A grid of jaxcomp runs: a config, axes of settings, and what to report.

A grid comes from the command line (`--grid key=v1,v2`, repeatable) or a TOML
file (`launch/grids/*.toml`):

    config = "configs/jpeg_dl.py"            # the config file (":args" allowed)
    settings = {"config.train.progress_bar" = false}   # every run
    metrics = ["accuracy"]                   # summary.json keys to tabulate ("eval" first)
    [axes]                                   # the product of these, in this order
    variant = ["imagenet_resnet18", "imagenet_resnet34"]
    arm = {baseline = {jpeg_layer = false}, jpeg_dl = {}}   # named bundles of settings
    seed = [0, 1, 2]
    [plot]                                   # summarize.py's figure
    kind = "bar"                             # "bar" | "line"
    x = "variant"                            # an axis (or, for "line", a metric)
    hue = "arm"                              # one bar / line per value (optional)

A setting `key = value` is a config argument (`--config=FILE:key=value`); a key
starting with "config." is a command-line override (`--config.train.epochs=1`).
A plain axis `key = [v1, v2]` sets `key`; a named axis maps each value's name to
its settings. Axes named `seed` (or ending in `.seed`) are the repetitions that
summarize.py averages over.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import tomllib
from typing import Any

Settings = dict[str, Any]


def is_seed(axis: str) -> bool:
  """Whether `axis` repeats runs with another seed (summarize.py averages over it)."""
  return axis == "seed" or axis.endswith(".seed")


@dataclasses.dataclass(frozen=True)
class Run:
  """One combination: its name (the workdir under the root) and command-line parts.

  Attributes:
    name: `key=value` of every axis, joined by "_" (the axis key's last part).
    params: axis -> value (the value's name for a named axis).
    config: the config file argument, `FILE[:k=v,...]`.
    overrides: `--config.<key>=<value>` flags.
  """
  name: str
  params: dict[str, str]
  config: str
  overrides: tuple[str, ...]


@dataclasses.dataclass
class Grid:
  """Axes over a config (see the module docstring).

  Attributes:
    config: config file, optionally with ":args".
    axes: ordered (axis, {value name: settings}).
    settings: settings of every run.
    metrics: summary.json keys (in "eval", else top level) that summarize.py reports.
    plot: summarize.py's figure ({} = none).
  """
  config: str
  axes: list[tuple[str, dict[str, Settings]]]
  settings: Settings = dataclasses.field(default_factory=dict)
  metrics: list[str] = dataclasses.field(default_factory=lambda: ["accuracy"])
  plot: dict[str, str] = dataclasses.field(default_factory=dict)

  def runs(self) -> list[Run]:
    """Every combination, the last axis varying fastest."""
    short = [axis.split(".")[-1] for axis, _ in self.axes]
    if len(set(short)) < len(short):
      raise ValueError(f"axes {[a for a, _ in self.axes]} end in the same name; run names "
                       "would collide")
    out = []
    for combo in itertools.product(*[list(values.items()) for _, values in self.axes]):
      settings = dict(self.settings)
      params = {}
      for (axis, _), (value, extra) in zip(self.axes, combo):
        params[axis] = value
        settings.update(extra)
      name = "_".join(f"{s}={params[a]}" for s, (a, _) in zip(short, self.axes)) or "run"
      out.append(Run(name, params, *_command_parts(self.config, settings)))
    return out

  def to_json(self) -> dict[str, Any]:
    return {"config": self.config, "axes": [[a, v] for a, v in self.axes],
            "settings": self.settings, "metrics": self.metrics, "plot": self.plot}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "Grid":
    return cls(d["config"], [(a, v) for a, v in d["axes"]], d.get("settings", {}),
               d.get("metrics", ["accuracy"]), d.get("plot", {}))


def _command_parts(config: str, settings: Settings) -> tuple[str, tuple[str, ...]]:
  args = [f"{k}={v}" for k, v in settings.items() if not k.startswith("config.")]
  overrides = tuple(f"--{k}={v}" for k, v in settings.items() if k.startswith("config."))
  if args:
    config += ("," if ":" in config else ":") + ",".join(args)
  return config, overrides


def _plain_axis(axis: str, values: list[Any]) -> dict[str, Settings]:
  return {str(v): {axis: v} for v in values}


def from_cli(config: str, grid: list[str]) -> Grid:
  """`--grid key=v1,v2` items (values are strings, passed on as written)."""
  axes = []
  for item in grid:
    if "=" not in item:
      raise ValueError(f"--grid {item!r} must be key=v1,v2,...")
    key, values = item.split("=", 1)
    axes.append((key, _plain_axis(key, values.split(","))))
  return Grid(config, axes)


def _is_named(axis: str, values: dict[str, Settings]) -> bool:
  return any(set(v) != {axis} or str(v[axis]) != name for name, v in values.items())


def with_cli_axes(grid: Grid, items: list[str]) -> Grid:
  """`grid` with `--grid key=v1,v2` items replacing its axis `key` (of a named axis,
  the values named) or added after its axes.

  Raises:
    ValueError: a name that a named axis does not have.
  """
  axes = dict(grid.axes)
  for axis, values in from_cli(grid.config, items).axes:
    if axis in axes and _is_named(axis, axes[axis]):
      missing = [v for v in values if v not in axes[axis]]
      if missing:
        raise ValueError(f"--grid {axis}: {missing} not among {list(axes[axis])}")
      values = {v: axes[axis][v] for v in values}
    axes[axis] = values
  return dataclasses.replace(grid, axes=list(axes.items()))


def from_file(path: str | pathlib.Path) -> Grid:
  """A TOML grid file (module docstring).

  Raises:
    ValueError: a missing `config`, an empty axis, an unknown top-level key or plot kind.
  """
  with open(path, "rb") as f:
    d = tomllib.load(f)
  unknown = set(d) - {"config", "axes", "settings", "metrics", "plot"}
  if unknown or "config" not in d:
    raise ValueError(f"{path}: needs `config`; unknown keys {sorted(unknown)}")
  axes = []
  for axis, values in d.get("axes", {}).items():
    if not values:
      raise ValueError(f"{path}: axis {axis!r} has no values")
    axes.append((axis, dict(values) if isinstance(values, dict) else _plain_axis(axis, values)))
  plot = d.get("plot", {})
  if plot and plot.get("kind", "bar") not in ("bar", "line"):
    raise ValueError(f"{path}: plot.kind must be 'bar' or 'line', got {plot['kind']!r}")
  return Grid(d["config"], axes, d.get("settings", {}), d.get("metrics", ["accuracy"]), plot)
