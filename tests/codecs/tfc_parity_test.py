"""jaxcomp vs tensorflow-compression on the same parameters and inputs (to 1e-5).

The reference file is produced by `benchmarks/tfc_parity.py` in a TFC 2.14
environment (see that script and requirements-tfc.txt); it stores the inputs,
the parameters exported from a shipped jaxcomp model, and TFC's outputs.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest

from jaxcomp.entropy import factorized, gaussian_conditional
from jaxcomp.layers.gdn import gdn

REFERENCE = pathlib.Path(__file__).parent / "data" / "tfc_parity.npz"


@pytest.fixture(scope="module")
def ref():
  if not REFERENCE.exists():
    pytest.skip(f"{REFERENCE} missing: run benchmarks/tfc_parity.py in a TFC environment")
  return dict(np.load(REFERENCE))


@pytest.mark.parametrize("simplified", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_gdn(ref, simplified, inverse):
  got = jax.jit(lambda x, b, g: gdn(x, b, g, inverse=inverse, simplified=simplified))(
      ref["x"], ref["beta"], ref["gamma"])
  key = f"{'simplified' if simplified else 'classic'}_{'igdn' if inverse else 'gdn'}"
  # Same float32 formula up to summation order and sqrt vs rsqrt: ~1e-6 relative.
  np.testing.assert_allclose(got, ref[key], rtol=1e-5, atol=1e-5)


def test_factorized_likelihood(ref):
  n = sum(1 for k in ref if k.startswith("matrix_"))
  density = factorized.Density(tuple(ref[f"matrix_{i}"] for i in range(n)),
                               tuple(ref[f"bias_{i}"] for i in range(n)),
                               tuple(ref[f"factor_{i}"] for i in range(n - 1)))
  got = jax.jit(lambda y: factorized.likelihood(y, density, likelihood_bound=0.0))(ref["y"])
  np.testing.assert_allclose(got, ref["factorized_likelihood"], atol=1e-5)


def test_gaussian_likelihood(ref):
  got = jax.jit(lambda y, s, m: gaussian_conditional.likelihood(y, s, m, likelihood_bound=0.0))(
      ref["gaussian_y"], ref["gaussian_sigma"], ref["gaussian_mu"])
  np.testing.assert_allclose(got, ref["gaussian_likelihood"], atol=1e-5)
