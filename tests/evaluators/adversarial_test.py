"""The adversarial runner (configs/adversarial.py) on two tiny trained runs."""

import json
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcomp import config_lib
from jaxcomp import main as main_lib
from jaxcomp.evaluators import adversarial
from jaxcomp.evaluators.runs import load_run

sys.path.insert(0, "configs")
import adversarial as adversarial_config  # noqa: E402  (configs/adversarial.py)


def _config(arg):
  return config_lib.validate(adversarial_config.get_config(arg))


@pytest.mark.parametrize("report", ["table", "ablation", "jpeg_dl"])
def test_configs_build(report):
  c = _config(f"report={report}")
  for name, spec in adversarial.ordered(c.robustness.attacks):
    adversarial.build_attack(name, spec)
  for name, spec in adversarial.ordered(c.robustness.defenses):
    adversarial.build_defense(name, spec, rcam_fn=lambda x: jnp.ones(x.shape[:3]))
  # The thesis's order, not ConfigDict's alphabetical one.
  if report != "jpeg_dl":
    assert [n for n, _ in adversarial.ordered(c.robustness.attacks)][:4] == [
        "fgsm", "ga", "igsm", "pgd"]


def test_attack_subset_keeps_the_adaptive_column_to_gradient_attacks():
  c = _config("attacks=fgsm+cw").robustness
  assert list(c.attacks) == ["cw", "fgsm"] and c.adaptive
  assert tuple(c.adaptive_attacks) == ("fgsm",)
  # Only minimal-perturbation attacks: no adaptive column at all (an empty
  # adaptive_attacks would mean "all" to the runner).
  assert not _config("attacks=deepfool+jsma+lbfgs+cw").robustness.adaptive


def test_bad_specs_are_config_errors():
  with pytest.raises(config_lib.ConfigError, match="is not one of"):
    adversarial.build_attack("x", {"method": "fsgm", "eps": 0.1})
  with pytest.raises(config_lib.ConfigError, match="takes no"):
    adversarial.build_attack("x", {"method": "fgsm", "epsilon": 0.1})
  with pytest.raises(config_lib.ConfigError, match="unknown stage"):
    adversarial.build_defense("d", {"stages": "pd+median"})
  with pytest.raises(config_lib.ConfigError, match="take no"):
    adversarial.build_defense("d", {"stages": "jpeg", "window": 3})
  with pytest.raises(config_lib.ConfigError, match="report"):
    c = adversarial_config.get_config("report=table")
    c.robustness.report = "tables"
    config_lib.validate(c)


def test_defense_pipeline_matches_its_stages():
  from jaxcomp import defenses
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  key = jax.random.key(1)
  d, meta = adversarial.build_defense("d", {"stages": "pd+wd", "deflections": 20, "window": 3,
                                            "rcam": False, "sigma": 0.04, "votes": 10})
  assert meta == {"group": "", "votes": 10, "random": True}
  want = defenses.pd_rcam_dwt(x, jax.random.fold_in(key, 0), deflections=20, window=3,
                              sigma=0.04)
  # pd_rcam_dwt = deflect, denoise, clip: the same stages with the same keys.
  np.testing.assert_allclose(d(x, key), want, atol=1e-6)


def test_jpeg_layer_bpda_gradient_is_the_backbones(jpeg_dl_run):
  task, variables = load_run(jpeg_dl_run / "jdl")
  model = adversarial.jpeg_layer_bpda(task)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  key = jax.random.key(1)
  np.testing.assert_allclose(model(variables, x, key), task.apply_fn(variables, x), atol=1e-5)
  backbone = task.model.clone(jpeg_layer=None)
  layer_out = task.model.jpeg_layer.apply({"params": variables["params"]["jpeg_layer"]}, x)
  loss = lambda f: lambda z: jnp.sum(f(z)[:, 0])
  got = jax.grad(loss(lambda z: model(variables, z, key)))(x)
  want = jax.grad(loss(lambda z: backbone.apply(variables, z, train=False)[0]))(layer_out)
  # BPDA: identity on the backward pass, so the gradient is the backbone's at the layer output.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  soft = jax.grad(loss(lambda z: task.apply_fn(variables, z)))(x)
  assert not np.allclose(soft, got)  # the soft quantizer's own gradient differs
  with pytest.raises(ValueError, match="no JPEG layer"):
    adversarial.jpeg_layer_bpda(load_run(jpeg_dl_run / "base")[0])


def test_table_report(jpeg_dl_run, tmp_path):
  c = adversarial_config.get_config(f"runlocal=True,checkpoints={jpeg_dl_run / 'base'}")
  r = c.robustness
  r.num_examples = 8
  r.attacks = ml_collections.ConfigDict({
      "fgsm": {"method": "fgsm", "eps": 0.03, "order": 0},
      "deepfool": {"method": "deepfool", "max_iter": 2, "order": 1}})
  r.adaptive_attacks = ("fgsm",)
  r.defenses = ml_collections.ConfigDict({
      "JPEG": {"stages": "jpeg", "quality": 50, "order": 0},
      # convnet_c2_32 flattens into its head (no R-CAM): untargeted deflection.
      "PD+WD": {"stages": "pd+wd", "deflections": 10, "window": 2, "sigma": 0.04, "votes": 3,
                "rcam": False,
                "order": 1}})
  report = adversarial.run(config_lib.validate(c), str(tmp_path))
  cells = {(x["attack"], x["defense"], x["adaptive"]): x for x in report["records"]}
  assert cells["clean", "none", False]["accuracy"] == 1.0  # only correctly classified images
  assert ("fgsm", "PD+WD", True) in cells and ("deepfool", "PD+WD", True) not in cells
  assert all(x["count"] == report["images"] for x in report["records"])
  assert 0 < report["images"] <= 8
  for x in report["records"]:
    assert 0.0 <= x["accuracy"] <= 1.0
  md = (tmp_path / "robustness.md").read_text()
  assert "PD+WD (BPDA+EOT)" in md and "Destruction rate" in md
  assert json.loads((tmp_path / "robustness.json").read_text())["report"] == "table"


@pytest.mark.slow   # 28 s; the JPEG-DL layer's BPDA model is tested above, its config in test_configs_build
def test_jpeg_dl_report(jpeg_dl_run, tmp_path):
  c = adversarial_config.get_config(
      f"report=jpeg_dl,num_examples=8,checkpoints={jpeg_dl_run / 'jdl'};{jpeg_dl_run / 'base'}")
  c.robustness.eps = (1 / 255, 4 / 255)
  c.robustness.batch_size = 8
  report = adversarial.run(config_lib.validate(c), str(tmp_path))
  modes = {(x["arm"], x["mode"]) for x in report["rows"]}
  assert modes == {("jdl", "soft"), ("jdl", "bpda"), ("base", "soft")}
  fgsm = [x for x in report["rows"] if x["attack"] == "fgsm"]
  assert len(fgsm) == 3 * 2 and all(x["count"] == 8 for x in fgsm)
  md = (tmp_path / "robustness.md").read_text()
  assert "| jdl | bpda | 1 |" in md and "4/255" in md


def test_main_errors(tmp_path, capsys):
  from absl import flags
  argv = ["main", f"--config=configs/adversarial.py:checkpoints={tmp_path / 'missing'}",
          f"--workdir={tmp_path / 'out'}"]
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  assert main_lib.main(argv[:1]) == 2
  assert "missing" in capsys.readouterr().err


def test_attack_subset_argument():
  c = _config("attacks=fgsm+cw")
  assert sorted(c.robustness.attacks) == ["cw", "fgsm"]
  assert c.robustness.adaptive_attacks == ("fgsm",)
  with pytest.raises(config_lib.ConfigError, match="unknown"):
    adversarial_config.get_config("attacks=fgsm+bogus")
