"""Ballé, Laparra, Simoncelli 2017 ("BLS"): GDN transforms with a factorized prior.

  python -m jaxcomp.main --config=configs/bls2017.py:quality=3 --workdir=/tmp/bls2017-q3
  python -m jaxcomp.main --config=configs/bls2017.py:runlocal=True --workdir=/tmp/bls-smoke

Same arguments as configs/bmshj2018.py (quality 1..8, distortion, steps, small,
runlocal); N = M = 128 for qualities 1-5 and 192 for 6-8 (SPEC Sec. 3).
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "bmshj2018", pathlib.Path(__file__).resolve().parent / "bmshj2018.py")
_bmshj2018 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bmshj2018)


def get_config(arg=None):
  return _bmshj2018.rd_config("bls2017", arg)
