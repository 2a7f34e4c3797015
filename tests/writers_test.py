"""Run outputs are written atomically: a failed write leaves nothing, figures are whole PNGs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxcomp import writers


def test_atomic_write_leaves_no_file_on_failure(tmp_path, monkeypatch):
  target = tmp_path / "out.jpg"

  def fail(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="disk full"):
    writers.write_atomic(str(target), b"data")
  assert not list(tmp_path.iterdir())


def test_atomic_write_keeps_the_replaced_files_permissions(tmp_path):
  target = tmp_path / "a.json"
  target.write_text("old")
  target.chmod(0o640)
  writers.write_json(target, {"x": np.float32(1.5)})
  assert target.read_text() == '{\n  "x": 1.5\n}\n' and target.stat().st_mode & 0o777 == 0o640


def test_plot_tables_writes_one_png_and_no_temporary_file(tmp_path):
  path = writers.plot_tables([("a", np.arange(64).reshape(8, 8)), ("b", np.ones((8, 8)))],
                             tmp_path / "t.png", value_format="{:.2g}")
  with Image.open(path) as im:
    assert im.format == "PNG" and im.size[0] > im.size[1]      # two panels side by side
  assert [p.name for p in tmp_path.iterdir()] == ["t.png"]


def test_report_main_writes_json_and_plot_or_fails_with_status_2(tmp_path, capsys):
  drawn = []
  out = tmp_path / "r.json"
  assert writers.report_main(lambda: {"a": np.float32(0.5)}, out=str(out),
                             plot=lambda r, p: drawn.append((r, p)), plot_path="x.png") == 0
  assert out.read_text() == '{\n  "a": 0.5\n}\n' and drawn == [({"a": np.float32(0.5)}, "x.png")]

  def missing():
    raise FileNotFoundError("no run in /nowhere")

  assert writers.report_main(missing, out=str(tmp_path / "s.json")) == 2
  assert capsys.readouterr().err == "error: no run in /nowhere\n"
  assert not (tmp_path / "s.json").exists()
