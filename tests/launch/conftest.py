"""Launch-script tests: launch/ on the import path, fake commands on PATH."""

from __future__ import annotations

import os
import pathlib
import stat
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "launch"))


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
  """`make(name, script)` writes an executable `name` into a folder that comes first on
  PATH; returns the folder."""
  folder = tmp_path / "bin"
  folder.mkdir()
  monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

  def make(name: str, script: str) -> pathlib.Path:
    path = folder / name
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path

  make.folder = folder
  return make
