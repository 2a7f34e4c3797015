"""Tests of the classifier zoo: registry, shapes, parameter counts, train/eval, bf16.

The default suite checks every registered model through `jax.eval_shape` (no
XLA compilation: parameter counts and output shapes at the intended input size)
and runs small members of every family under `jax.jit`. The real-size jitted
forward of every registered model is `slow`.

Sources of the expected parameter counts (params collection only):
  * Tables 3.2 / 3.3 of the compressed-training thesis, recomputed in SPEC Sec. 4
    (two printed figures are typos: VGG11-3 300,554 -> 299,274, 128 x 10 too
    high; RES18-3 326,374 -> 326,474);
  * torchvision's model documentation (1000 classes): resnet18 11,689,512,
    resnet34 21,797,672, resnet50 25,557,032, squeezenet1_1 1,235,496,
    densenet121 7,978,856;
  * the PyTorch reference code counted with `sum(p.numel() for p in
    model.parameters())` (torch 2.13 CPU, this machine): HobbitLong/RepDistiller
    resnet32/56/110, vgg8_bn/vgg11_bn/vgg13_bn, mobile_half, ShuffleV2 for 100
    classes and JPEG-DL's CIFAR_ResNet18 for 10 classes;
  * closed forms written out below (CIFAR ResNets, DenseNet-BC, C^n(X)).
The same PyTorch code gave the same logits as these modules for copied weights
(max abs difference <= 1.4e-5 on logits up to 23), which is not re-run here
(no PyTorch in the test environment).
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import models
from jaxcomp.models import common
from jaxcomp.models.convnet import ConvNet
from jaxcomp.models.densenet import DenseNet
from jaxcomp.models.mobilenetv2 import MobileNetV2
from jaxcomp.models.resnet import BasicBlock, Bottleneck, PreActBlock, ResNet
from jaxcomp.models.shufflenetv2 import ShuffleNetV2, channel_shuffle
from jaxcomp.models.squeezenet import SqueezeNet, max_pool_ceil
from jaxcomp.models.vgg import VGG


def _cifar_resnet_count(n: int, k: int) -> int:
  """He et al. 2016 CIFAR ResNet, 6n+2 layers, projection (1x1 conv + BN) shortcuts.

  Stem 3x3x3x16 + BN(16); per stage of width w after width v: a first block
  9vw + 9w^2 + 2 BN(w) (+ vw + BN(w) if v != w), then n - 1 blocks of
  18w^2 + 2 BN(w); head 64k + k. BN(w) has 2w parameters.
  """
  total = 27 * 16 + 2 * 16
  v = 16
  for w in (16, 32, 64):
    total += 9 * v * w + 9 * w * w + 4 * w + (v * w + 2 * w if v != w else 0)
    total += (n - 1) * (18 * w * w + 4 * w)
    v = w
  return total + 64 * k + k


def _densenet_bc_count(depth: int, k: int, classes: int) -> int:
  """Huang et al. 2017 DenseNet-BC for 32x32: 3x3 stem of 2k, 3 blocks of (depth-4)/6 layers.

  Layer on c channels: BN(c) + c*4k + BN(4k) + 9*4k*k; transition on c:
  BN(c) + c*floor(c/2); final BN(c) and head c*classes + classes.
  """
  layers = (depth - 4) // 6
  c = 2 * k
  total = 27 * c
  for block in range(3):
    for _ in range(layers):
      total += 2 * c + c * 4 * k + 2 * 4 * k + 9 * 4 * k * k
      c += k
    if block < 2:
      total += 2 * c + c * (c // 2)
      c //= 2
  return total + 2 * c + c * classes + classes


def _convnet_count_without_fc(n: int, x: int, c: int = 3) -> int:
  """C^n(X): (9c + 1)X + 2X for the first conv + BN, then (9X + 1)X + 2X each."""
  return (9 * c + 1) * x + 2 * x + (n - 1) * ((9 * x + 1) * x + 2 * x)


# name -> (input size, classes, expected parameter count, features [h, w, C], pre_logits D)
EXPECTED = {
    "resnet20": (32, 10, 272_474, (8, 8, 64), 64),
    "resnet32": (32, 100, 472_756, (8, 8, 64), 64),
    "resnet56": (32, 100, 861_620, (8, 8, 64), 64),
    "resnet110": (32, 100, 1_736_564, (8, 8, 64), 64),
    "resnet18": (224, 1000, 11_689_512, (7, 7, 512), 512),
    "resnet34": (224, 1000, 21_797_672, (7, 7, 512), 512),
    "resnet50": (224, 1000, 25_557_032, (7, 7, 2048), 2048),
    "preact_resnet18": (32, 10, 11_171_274, (4, 4, 512), 512),
    "vgg8": (32, 100, 3_965_028, (4, 4, 512), 512),
    "vgg11": (32, 100, 9_277_284, (4, 4, 512), 512),
    "vgg13": (32, 100, 9_462_180, (4, 4, 512), 512),
    "mobilenetv2": (32, 100, 812_836, (2, 2, 1280), 1280),
    "shufflenetv2": (32, 100, 1_355_528, (4, 4, 1024), 1024),
    "squeezenet1_1": (224, 1000, 1_235_496, (13, 13, 512), 512),
    "densenet121": (224, 1000, 7_978_856, (7, 7, 1024), 1024),
    "densenet_bc_100": (32, 10, 769_162, (8, 8, 342), 342),
    "thesis_vgg11": (32, 10, 9_231_114, (2, 2, 512), 512),
    "thesis_vgg11_1": (32, 10, 1_555_466, (2, 2, 256), 256),
    "thesis_vgg11_2": (32, 10, 669_962, (2, 2, 256), 256),
    "thesis_vgg11_3": (32, 10, 299_274, (2, 2, 128), 128),  # printed 300,554: typo
    "thesis_vgg11_4": (32, 10, 113_610, (2, 2, 128), 128),
    "thesis_vgg11_5": (32, 10, 48_426, (2, 2, 128), 128),
    "thesis_res18": (32, 10, 11_173_962, (4, 4, 512), 512),
    "thesis_res18_1": (32, 10, 4_903_242, (4, 4, 512), 512),
    "thesis_res18_2": (32, 10, 1_235_274, (8, 8, 256), 2 * 2 * 256),
    "thesis_res18_3": (32, 10, 326_474, (16, 16, 128), 4 * 4 * 128),  # printed 326,374: typo
    "thesis_res18_4": (32, 10, 116_810, (32, 32, 64), 8 * 8 * 64),
}
# C^n(32) on CIFAR-10 with the thesis's flattened FC: Table 5.5 + 32*32*32*10 + 10.
for _n in (2, 3, 8, 13, 18):
  EXPECTED[f"convnet_c{_n}_32"] = (32, 10, _convnet_count_without_fc(_n, 32) + 327_690,
                                   (32, 32, 32), 32 * 32 * 32)
EXPECTED["convnet"] = EXPECTED["convnet_c3_32"]


def _key(seed: int) -> jax.Array:
  """An "rbg" PRNG key: XLA compiles its random-bit generator far faster on CPU
  than the default threefry (a small ResNet's jitted init: ~6 s vs ~30 s of CPU)."""
  return jax.random.key(seed, impl="rbg")


def _images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
  """Standard-normal stand-ins for normalised images (numpy: nothing to compile)."""
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _shapes(name: str, size: int, classes: int, channels: int = 3):
  """Variables and outputs of `name` as ShapeDtypeStructs (traced, not compiled)."""
  model = models.MODELS.get(name)(classes)
  x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)

  def init_and_apply(x):
    variables = model.init(_key(0), x)
    return variables, model.apply(variables, x)

  return jax.eval_shape(init_and_apply, x)


# Classifiers of codec latents, not images: counted and shaped in cresnet_test.py.
LATENT_MODELS = ("cresnet39", "cresnet39_coded")
# The MS-ROI network (class maps, no "head"): tested in tests/msroi/test_network_maps.py.
MAP_MODELS = ("msroinet",)


def test_every_registered_model_has_expectations():
  assert sorted([*EXPECTED, *LATENT_MODELS, *MAP_MODELS]) == models.MODELS.names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_model_shapes_and_parameter_count(name):
  size, classes, count, features, dim = EXPECTED[name]
  variables, (logits, aux) = _shapes(name, size, classes)
  assert models.count_params(variables["params"]) == count
  assert logits.shape == (2, classes) and logits.dtype == jnp.float32
  assert aux["features"].shape == (2, *features)
  assert aux["pre_logits"].shape == (2, dim)
  head = variables["params"]["head"]
  # R-CAM's class map is features @ head.kernel: the kernel reads C channels
  # wherever the model pools globally (the thesis models and C^n(X) flatten).
  assert head["kernel"].shape == ((features[-1] if name == "squeezenet1_1" else dim), classes)
  leaves = jax.tree.leaves(variables["params"])
  assert all(leaf.dtype == jnp.float32 for leaf in leaves)


def test_closed_form_counts():
  # He et al. 2016 CIFAR ResNet-20: "0.27M"; this count includes the projection
  # shortcuts of CRD's version.
  assert _cifar_resnet_count(3, 10) == EXPECTED["resnet20"][2] == 272_474
  for depth in (32, 56, 110):
    assert _cifar_resnet_count((depth - 2) // 6, 100) == EXPECTED[f"resnet{depth}"][2]
  # Huang et al. 2017 Table 2 prints "0.8M" for DenseNet-BC (L=100, k=12).
  assert _densenet_bc_count(100, 12, 10) == EXPECTED["densenet_bc_100"][2]
  # Table 5.5 of the Brandeis thesis (x 1000, without the final FC): 20, 66, 113, 159.
  assert [round(_convnet_count_without_fc(n, 32) / 1000) for n in (3, 8, 13, 18)] == [
      20, 66, 113, 159]


def test_preact_resnet18_stem_follows_input_size():
  _, (logits, aux) = _shapes("preact_resnet18", 224, 200)
  assert aux["features"].shape == (2, 7, 7, 512) and logits.shape == (2, 200)


def test_fashion_mnist_input():
  # 28x28x1 images: the stem reads any number of channels, pooling is global.
  variables, (logits, aux) = _shapes("resnet20", 28, 10, channels=1)
  assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 1, 16)
  assert aux["features"].shape == (2, 7, 7, 64) and logits.shape == (2, 10)


def _host_variables(model: nn.Module, x: np.ndarray, seed: int = 0):
  """Variables of `model` for `x` made with numpy, so no initialiser is compiled.

  Shapes come from `jax.eval_shape(model.init)`; kernels ~ N(0, 1 / fan_in),
  BatchNorm scales and running variances 1, biases and running means 0. (The
  jitted init itself is tested once, in `test_jitted_init_follows_pytorch`.)
  """
  shapes = jax.eval_shape(model.init, _key(0), x)
  rng = np.random.default_rng(seed)

  def make(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name in ("bias", "mean"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = math.prod(leaf.shape[:-1])
    return jnp.asarray(rng.standard_normal(leaf.shape) / math.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(make, shapes)


def _check_run(model: nn.Module, x: np.ndarray, *, features: tuple[int, int, int] | None,
               cam: bool = False, low: bool = False, low_close: bool = False,
               init: bool = False, rngs=None) -> None:
  """Runs `model` under one jit (eval, eval with the second example changed, train,
  and with `low` a bfloat16 train pass) and checks shapes, dtypes and semantics.

  Variables come from the jitted `model.init` with `init`, else from numpy.
  `low_close` also compares the bfloat16 logits with the float32 ones: only for
  shallow networks, since a deep network at random initialisation amplifies
  rounding differences (C^18(32): 15 % of the logits' scale).
  """
  variables = jax.jit(model.init)(_key(0), x) if init else _host_variables(model, x)
  x2 = x.copy()
  x2[1] = -x2[1]
  bf16 = model.clone(dtype=jnp.bfloat16)
  rngs = rngs or {}

  @jax.jit
  def run(variables, x, x2):
    out = {"eval": model.apply(variables, x), "eval2": model.apply(variables, x2)[0]}
    out["train"], out["updates"] = model.apply(variables, x, train=True,
                                               mutable=["batch_stats"], rngs=rngs)
    if low:
      out["low"] = bf16.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)[0]
    return out

  out = run(variables, x, x2)
  batch, classes = x.shape[0], model.num_classes
  logits, aux = out["eval"]
  for y in [logits, out["train"][0]] + ([out["low"][0]] if low else []):
    chex.assert_shape(y, (batch, classes))
    assert y.dtype == jnp.float32
    chex.assert_tree_all_finite(y)
  assert aux["features"].ndim == 4 and aux["features"].shape[0] == batch
  if features is not None:
    chex.assert_shape(aux["features"], (batch, *features))
  assert aux["pre_logits"].ndim == 2 and aux["pre_logits"].shape[0] == batch
  # Evaluation is per example (running statistics): changing the second example
  # leaves the first one's logits (float32; XLA may order the reductions of the
  # two copies differently, hence a few ulps of tolerance).
  np.testing.assert_allclose(logits[0], out["eval2"][0], rtol=1e-6, atol=1e-6)
  assert np.any(logits[1] != out["eval2"][1])
  if "batch_stats" in variables:
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                         out["updates"]["batch_stats"])
    assert all(jax.tree.leaves(moved)), "a BatchNorm's running statistics did not move"
  if cam:
    # Global pooling: logits = mean_hw(features) @ W + b = mean_hw(features @ W) + b,
    # the class activation map R-CAM uses. Two float32 summation orders over up to
    # 49 x 2048 terms differ by ~1e-6 of the largest value (evaluation-mode logits
    # of deep random networks reach 1e8: running statistics do not rescale them).
    head = variables["params"]["head"]
    maps = jnp.einsum("bhwc,ck->bhwk", aux["features"], head["kernel"])
    feature_scale = float(jnp.abs(aux["features"]).max())
    np.testing.assert_allclose(aux["pre_logits"], aux["features"].mean(axis=(1, 2)),
                               atol=1e-5 * feature_scale + 1e-6)
    scale = float(jnp.abs(logits).max())
    np.testing.assert_allclose(logits, maps.mean(axis=(1, 2)) + head["bias"],
                               atol=1e-5 * scale + 1e-6)
  if low:
    low_logits, low_aux = out["low"]
    assert low_aux["features"].dtype == jnp.bfloat16
    if low_close:
      # bfloat16 keeps 8 mantissa bits (relative step 2**-8 = 0.4 %); a few
      # percent of the logits' scale after ~10 layers.
      train_logits = out["train"][0]
      scale = float(jnp.abs(train_logits).max())
      np.testing.assert_allclose(low_logits, train_logits, atol=0.05 * scale + 1e-3)


# Small members of every family, to cover each block type, stem, pooling rule
# and layout under jit; name -> (model, input shape, features [h, w, C], options).
TINY = {
    "resnet_basic_cifar": (ResNet(10, stage_sizes=(1, 1, 1), widths=(4, 8, 16), stem_width=4),
                           (2, 28, 28, 1), (7, 7, 16), dict(cam=True, low=True, low_close=True)),
    "resnet_bottleneck_imagenet": (ResNet(10, stage_sizes=(1, 2), widths=(4, 8), block=Bottleneck,
                                          stem_width=8, stem="imagenet"), (2, 64, 64, 3),
                                   (8, 8, 32), dict(cam=True)),
    "resnet_preact_auto_large": (ResNet(10, stage_sizes=(1, 1), widths=(4, 8), block=PreActBlock,
                                        stem_width=4, stem="auto"), (2, 128, 128, 3),
                                 (16, 16, 8), dict(cam=True)),
    "resnet_thesis_avg4": (ResNet(10, stage_sizes=(1, 1), widths=(4, 8), block=BasicBlock,
                                  stem_width=4, head_pool="avg4"), (2, 32, 32, 3), (16, 16, 8), {}),
    "vgg_crd": (VGG(10, stages=((4,), (8,), (8, 8), (16,))), (2, 32, 32, 3), (4, 4, 16),
                dict(cam=True, low=True, low_close=True)),
    "vgg_thesis": (VGG(10, stages=((4,), (8,), (8,), (8,), (16,)), layout="thesis"),
                   (2, 32, 32, 3), (2, 2, 16), {}),
    "convnet_flatten": (ConvNet(10, depth=2, width=4), (2, 16, 16, 3), (16, 16, 4), {}),
    "mobilenetv2": (MobileNetV2(10, width=0.25, settings=((1, 16, 1, 1), (None, 24, 2, 2))),
                    (2, 32, 32, 3), (8, 8, 1280), dict(cam=True)),
    "shufflenetv2": (ShuffleNetV2(10, widths=(8, 16), num_units=(1, 1), last_width=32),
                     (2, 32, 32, 3), (8, 8, 32), dict(cam=True)),
    "densenet_cifar": (DenseNet(10, growth_rate=4, block_config=(2, 2), num_init_features=8,
                                stem="cifar"), (2, 16, 16, 3), (8, 8, 16), dict(cam=True)),
}


@pytest.mark.parametrize("case", sorted(TINY))
def test_family_runs_under_jit(case):
  model, shape, features, options = TINY[case]
  _check_run(model, _images(1, shape), features=features, **options)


def test_squeezenet_runs_and_needs_a_dropout_key():
  model = SqueezeNet(10)
  x = _images(1, (2, 32, 32, 3))
  # 32 -> conv3x3/2 15 -> max-pools (ceil) 7, 3, 1.
  _check_run(model, x, features=(1, 1, 512), rngs={"dropout": _key(2)})
  variables = jax.eval_shape(model.init, _key(0), x)
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(lambda v: model.apply(v, x, train=True), variables)


def test_jitted_init_follows_pytorch():
  model = ResNet(10, stage_sizes=(1, 1), widths=(8, 32), stem_width=8)
  variables = jax.jit(model.init)(_key(0), _images(0, (1, 8, 8, 3)))
  params = variables["params"]
  # Kaiming normal, fan_out = 3 * 3 * 32: std sqrt(2 / 288). 9,216 samples give the
  # sample std a relative standard error of 1 / sqrt(2 * 9216) = 0.7 %: 5 % is 7 sigma.
  kernel = params["stage2_block1"]["conv2"]["kernel"]
  np.testing.assert_allclose(np.std(kernel), math.sqrt(2 / 288), rtol=0.05)
  # nn.Linear's default: U(-1/sqrt(32), 1/sqrt(32)) for the head's weight.
  assert np.abs(params["head"]["kernel"]).max() <= 1 / math.sqrt(32)
  np.testing.assert_array_equal(params["head"]["bias"], 0.0)
  bn = params["stage2_block1"]["conv1_bn"]
  np.testing.assert_array_equal(bn["scale"], 1.0)
  np.testing.assert_array_equal(bn["bias"], 0.0)
  stats = variables["batch_stats"]["stage2_block1"]["conv1_bn"]
  np.testing.assert_array_equal(stats["mean"], 0.0)
  np.testing.assert_array_equal(stats["var"], 1.0)


def test_conv_pads_like_pytorch():
  # A stride-2 3x3 convolution of ones on a 4x4 input: PyTorch pads (1, 1), so the
  # first output sums 2x2 = 4 ones; Flax's "SAME" would pad (0, 1) and sum 9.
  layer = common.conv(1, 3, strides=2, dtype=jnp.float32, name="c")
  x = jnp.ones((1, 4, 4, 1))
  params = {"params": {"kernel": jnp.ones((3, 3, 1, 1))}}
  y = jax.jit(layer.apply)(params, x)
  np.testing.assert_array_equal(y[0, :, :, 0], [[4.0, 6.0], [6.0, 9.0]])


# conv_general_dilated's value and derivatives against lax: tests/ops/conv_test.py.


def test_input_gradient_in_a_loop_uses_canonical_convolutions():
  # XLA:CPU runs convolutions with "01oi" kernels (JAX's input gradient) on a
  # slow path inside loop bodies; the zoo's convolution never emits them.
  if jax.default_backend() != "cpu":
    pytest.skip("checks XLA:CPU's compiled convolutions")
  model = ConvNet(num_classes=10, width=8, depth=2)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  grad = jax.grad(lambda x: jnp.sum(model.apply(variables, x, train=False)[0]))
  loop = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, a: a + grad(x + a), x))
  hlo = loop.lower(jnp.zeros((2, 16, 16, 3))).compile().as_text()
  assert "convolution(" in hlo and "01io->" in hlo
  assert "01oi->" not in hlo


def test_channel_shuffle_interleaves_the_two_halves():
  # ShuffleNet's shuffle with 2 groups: [0..3 | 4..7] -> 0 4 1 5 2 6 3 7.
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)
  np.testing.assert_array_equal(jax.jit(channel_shuffle)(x)[0, 0, 0], [0, 4, 1, 5, 2, 6, 3, 7])


def test_max_pool_ceil_mode_keeps_the_last_partial_window():
  # PyTorch MaxPool2d(3, 2, ceil_mode=True) on 8 values: windows start at 0, 2, 4, 6
  # (the last covers 6..7 only) -> ceil((8 - 3) / 2) + 1 = 4 outputs.
  x = jnp.arange(64.0).reshape(1, 8, 8, 1)
  y = jax.jit(max_pool_ceil)(x)
  assert y.shape == (1, 4, 4, 1)
  np.testing.assert_array_equal(y[0, 0, :, 0], [18, 20, 22, 23])
  assert max_pool_ceil(jnp.zeros((1, 111, 111, 1))).shape == (1, 55, 55, 1)  # torchvision at 224


def test_bad_inputs_raise():
  model = ConvNet(10, depth=2, width=4, head_pool="global")
  x = jnp.zeros((2, 16, 16, 3))
  variables = jax.eval_shape(model.init, _key(0), x)
  with pytest.raises(ValueError, match="float"):
    model.apply(variables, jnp.zeros((2, 16, 16, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    model.apply(variables, jnp.zeros((16, 16, 3)))
  with pytest.raises(ValueError, match="stem"):
    jax.eval_shape(ResNet(10, stem="tiny").init, _key(0), x)
  with pytest.raises(ValueError, match="avg4"):
    jax.eval_shape(ResNet(10, stage_sizes=(1, 1, 1), widths=(4, 4, 4), head_pool="avg4").init,
                   _key(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="num_classes"):
    jax.eval_shape(ConvNet(0).init, _key(0), x)
  with pytest.raises(KeyError, match="resnet20"):
    models.MODELS.get("resnet21")


def test_get_model_and_count_params():
  model = models.get_model("convnet", num_classes=7, depth=2, width=4)
  assert isinstance(model, ConvNet) and model.num_classes == 7 and model.depth == 2
  tree = {"a": jnp.zeros((2, 3)), "b": {"c": jnp.zeros((4,))}}
  assert models.count_params(tree) == 10


# ImageNet-size models compile slowly on 2 cores: run them at 64x64 here.
_SLOW_SIZE = {"resnet18": 64, "resnet34": 64, "resnet50": 64, "squeezenet1_1": 64,
              "densenet121": 64}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_model_runs_under_jit(name):
  size, classes, _, features, _ = EXPECTED[name]
  if name in _SLOW_SIZE:
    size, features = _SLOW_SIZE[name], None
  cam = not name.startswith(("thesis_", "convnet", "squeezenet"))
  _check_run(models.MODELS.get(name)(classes), _images(1, (2, size, size, 3)),
             features=features, cam=cam, low=True, init=True, rngs={"dropout": _key(2)})
