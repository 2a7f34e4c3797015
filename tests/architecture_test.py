"""Import directions of docs/architecture.md hold for every module of the package (ast only)."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxcomp"
NO_ML_COLLECTIONS = ("jaxcomp.ops", "jaxcomp.layers", "jaxcomp.entropy", "jaxcomp.codecs",
                     "jaxcomp.models", "jaxcomp.attacks", "jaxcomp.defenses")


def _layers() -> dict[str, int]:
  text = (ROOT / "docs" / "architecture.md").read_text()
  block = re.search(r"```layers\n(.*?)```", text, re.S)
  assert block, "docs/architecture.md has no ```layers block"
  table = {}
  for line in block.group(1).strip().splitlines():
    level, names = line.split(":", 1)
    for name in names.split():
      table[name] = int(level)
  return table


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _level(module: str, table: dict[str, int]) -> int | None:
  best = None
  for name, level in table.items():
    if module == name or module.startswith(name + "."):
      if best is None or len(name) > len(best[0]):
        best = (name, level)
  return None if best is None else best[1]


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, module) of every import in the file, at any depth (jaxcomp uses no relative
  imports; one shows up as a module starting with ".")."""
  tree = ast.parse(path.read_text())
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = "." * node.level + (node.module or "")
      out.append((node.lineno, base))
      # `from jaxcomp import train` imports the module jaxcomp.train.
      out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
  return out


def test_every_module_has_a_layer_and_imports_downwards():
  table = _layers()
  problems = []
  for path in sorted(PACKAGE.rglob("*.py")):
    me = _module_name(path)
    if me == "jaxcomp":           # the package's __init__: a docstring and the version
      continue
    mine = _level(me, table)
    if mine is None:
      problems.append(f"{me}: no layer in docs/architecture.md")
      continue
    for line, target in _imports(path):
      if target.startswith("."):
        problems.append(f"{me}:{line} uses a relative import")
      if not target.startswith("jaxcomp.") or target == "jaxcomp":
        continue
      theirs = _level(target, table)
      if theirs is not None and theirs > mine and not me.startswith(target + "."):
        problems.append(f"{me}:{line} imports {target} (layer {theirs} > {mine})")
  assert not problems, "\n".join(problems)


def test_config_stays_out_of_the_library_and_orbax_in_checkpoint():
  problems = []
  for path in sorted(PACKAGE.rglob("*.py")):
    me = _module_name(path)
    if me.endswith(".__main__"):
      continue
    for line, target in _imports(path):
      if target.split(".")[0] == "ml_collections" and me.startswith(NO_ML_COLLECTIONS):
        problems.append(f"{me}:{line} imports ml_collections")
      if target.split(".")[0] == "orbax" and me != "jaxcomp.checkpoint":
        problems.append(f"{me}:{line} imports orbax (only jaxcomp.checkpoint may)")
  assert not problems, "\n".join(problems)


def test_the_checker_sees_a_violation(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from jaxcomp import train\n")
  assert (2, "jaxcomp.train") in _imports(bad)
