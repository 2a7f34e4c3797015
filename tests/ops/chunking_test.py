"""ops.chunking: divisors, chunk sizes, and map_chunks equal to the whole-batch call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.ops import chunking


@pytest.mark.parametrize("n,limit,want", [(64, 6, 4), (64, 64, 64), (64, 1000, 64), (7, 6, 1),
                                          (12, 0, 1), (28, 5, 4), (1, 3, 1)])
def test_largest_divisor(n, limit, want):
  assert chunking.largest_divisor(n, limit) == want


def test_images_per_chunk():
  # 224x224x3 float32 = 602,112 bytes: 4 MiB holds 6 of them, 64 = 4 x 16 -> 4.
  assert chunking.images_per_chunk(64, 224 * 224 * 3 * 4, 4 * 2 ** 20) == 4
  assert chunking.images_per_chunk(5, 10 ** 9, 1) == 1


def test_largest_divisor_rejects_empty():
  with pytest.raises(ValueError, match="n must be >= 1"):
    chunking.largest_divisor(0, 4)


@pytest.mark.parametrize("chunk", [1, 2, 3, 6])
def test_map_chunks_equals_whole_batch(chunk):
  x = jnp.asarray(np.random.default_rng(0).random((6, 5, 4), np.float32))
  y = jnp.arange(6.0)

  def fn(a, b, none):
    assert none is None
    return {"sum": a.sum(axis=(1, 2)) + b, "scaled": a * b[:, None, None]}

  got = jax.jit(lambda a, b: chunking.map_chunks(fn, chunk, a, b, None))(x, y)
  want = fn(x, y, None)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
    assert got[k].shape == want[k].shape


def test_map_chunks_rejects_a_chunk_that_does_not_divide():
  with pytest.raises(ValueError, match="does not divide the batch 6"):
    chunking.map_chunks(lambda a: a, 4, jnp.zeros((6, 2)))
