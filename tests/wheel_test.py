"""The wheel works: `python -m build` of this tree carries the shipped weights, samples
and configs; installed (not editable) into a fresh venv, `python -m jaxcomp.main` on
the packaged sample, `python -m jaxcomp.codecs list / compress / decompress` and
every jaxcomp import of the notebooks run from outside the checkout.

Offline: the wheel is built with this venv's setuptools (--no-isolation) and
installed with --no-deps; the fresh venv finds the dependencies in this venv's
site-packages through a .pth file (a path entry: the editable-install hook there
is not run, so `jaxcomp` can only come from the wheel). `pip check` then checks
the wheel's declared requirements against them.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow   # builds a 25 MB wheel and trains a few steps: minutes


def _tree_copy(dest: pathlib.Path) -> pathlib.Path:
  """The files a clone of this working tree has (tracked and not ignored)."""
  files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
  for name in filter(None, (f.decode() for f in files)):
    if (ROOT / name).is_file():
      (dest / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / name, dest / name)
  return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
  src = _tree_copy(tmp_path_factory.mktemp("src"))
  dist = tmp_path_factory.mktemp("dist")
  subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                  str(dist)], cwd=src, check=True, capture_output=True)
  (path,) = dist.glob("jaxcomp-*.whl")
  return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> pathlib.Path:
  """A fresh venv with the wheel installed; returns its python."""
  env_dir = tmp_path_factory.mktemp("venv")
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
  python = env_dir / "bin" / "python"
  subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                  "--no-deps", "--no-index", str(wheel)], check=True)
  purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                            "'purelib'))"], capture_output=True, text=True, check=True).stdout
  (pathlib.Path(purelib.strip()) / "_dependencies.pth").write_text(
      sysconfig.get_path("purelib") + "\n")
  return python


def _run(python: pathlib.Path, *args: str, cwd: pathlib.Path) -> str:
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  proc = subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True,
                        env={**env, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_wheel_carries_weights_samples_and_configs(wheel):
  names = set(zipfile.ZipFile(wheel).namelist())
  shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "jaxcomp").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
  assert shipped <= names, sorted(shipped - names)   # every module, weight and sample
  configs = {f"jaxcomp-0.1.0.data/data/share/jaxcomp/configs/{p.name}"
             for p in (ROOT / "configs").glob("*.py")}
  assert configs <= names
  assert not any(n.startswith(("tests/", "launch/", "configs/")) for n in names)


def test_installed_wheel_trains_on_the_packaged_sample(venv, tmp_path):
  where = _run(venv, "-c", "import jaxcomp, sys; print(jaxcomp.__file__); print(sys.prefix)",
               cwd=tmp_path).split()
  assert pathlib.Path(where[0]).is_relative_to(venv.parent.parent)   # not the checkout
  config = pathlib.Path(where[1]) / "share" / "jaxcomp" / "configs" / "jpeg_dl.py"
  out = _run(venv, "-m", "jaxcomp.main", f"--config={config}:variant=sample,runlocal=True",
             f"--workdir={tmp_path / 'run'}", "--config.train.progress_bar=False",
             f"--config.data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
  assert out.startswith("eval: accuracy=")
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["final_step"] == 4 and summary["eval"]["num_examples"] == 256


def test_installed_codec_cli_round_trip(venv, tmp_path):
  models = _run(venv, "-m", "jaxcomp.codecs", "list", cwd=tmp_path)
  assert all(f"hyperprior-q{q}" in models for q in (1, 2, 3, 4))
  kodak = pathlib.Path(_run(venv, "-c", "from jaxcomp.data import local; "
                            "print(local.sample_kodak_dir())", cwd=tmp_path).strip())
  assert kodak.is_relative_to(venv.parent.parent)
  _run(venv, "-m", "jaxcomp.codecs", "compress", "--model", "hyperprior-q1",
       str(kodak / "kodim23.png"), "k.jcx", cwd=tmp_path)
  _run(venv, "-m", "jaxcomp.codecs", "decompress", "k.jcx", "k.png", cwd=tmp_path)
  x = np.asarray(Image.open(kodak / "kodim23.png").convert("RGB"), np.float64)
  y = np.asarray(Image.open(tmp_path / "k.png"), np.float64)
  psnr = 10 * np.log10(255.0**2 / np.mean((x - y) ** 2))
  # What the checkout's `python -m jaxcomp.codecs evaluate` measured for this image
  # and model (docs/rd_kodak_hyperprior.json): the installed package does the same.
  rd = json.loads((ROOT / "docs" / "rd_kodak_hyperprior.json").read_text())
  (ref,) = [im for m in rd["models"] if m["model"] == "hyperprior-q1" for im in m["images"]
            if im["image"] == "kodim23.png"]
  assert y.shape == x.shape
  assert (tmp_path / "k.jcx").stat().st_size == pytest.approx(ref["bytes"], rel=0.01)
  assert psnr == pytest.approx(ref["psnr"], abs=0.05)


def _notebook_imports() -> list[str]:
  """Every `import jaxcomp...` / `from jaxcomp... import ...` in colab/*.ipynb."""
  lines = []
  for nb in sorted((ROOT / "colab").glob("*.ipynb")):
    for cell in json.loads(nb.read_text())["cells"]:
      if cell["cell_type"] != "code":
        continue
      source = "".join(cell["source"])
      code = "\n".join("" if re.match(r"\s*[%!]", line) else line for line in source.splitlines())
      for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import) and any(a.name.startswith("jaxcomp") for a in node.names):
          lines.append(ast.unparse(node))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxcomp"):
          lines.append(ast.unparse(node))
  return sorted(set(lines))


def test_notebook_imports_resolve_in_the_installed_wheel(venv, tmp_path):
  imports = _notebook_imports()
  assert imports, "no jaxcomp imports found in colab/*.ipynb"
  out = _run(venv, "-c", "\n".join([*imports, "import jaxcomp; print(jaxcomp.__file__)"]),
             cwd=tmp_path)
  assert pathlib.Path(out.strip()).is_relative_to(venv.parent.parent)
  check = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv), "check"],
                         capture_output=True, text=True)
  assert check.returncode == 0, check.stdout + check.stderr
