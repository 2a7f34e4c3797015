"""Adversarial robustness of trained classifiers: attacks x defenses, ablations, JPEG-DL.

  python -m jaxcomp.main --config=configs/adversarial.py:checkpoints=RUN --workdir=OUT
  python -m jaxcomp.main --config=configs/adversarial.py:report=ablation,checkpoints=RUN \
      --workdir=OUT
  python -m jaxcomp.main \
      --config=configs/adversarial.py:report=jpeg_dl,checkpoints='ROOT/*_seed*' --workdir=OUT

RUN is the workdir of a `python -m jaxcomp.main` classification run (e.g.
`configs/jpeg_dl.py:variant=cifar10`); its config.json names the model and the
test set. Arguments (`:key=value,...`): `report` ("table" | "ablation" |
"jpeg_dl"), `checkpoints` (workdirs separated by ";" — the argument string
itself is comma-separated — globs allowed), `num_examples`,
`seed`, `attacks` (a subset, names joined by "+", e.g. `attacks=fgsm+pgd`), `runlocal`
(tiny budgets, for smoke tests). See
`jaxcomp.evaluators.adversarial` for what each report contains.

Attack budgets follow the thesis (Ch. 4, Table 4.9: RMSE = normalised L2 on
[0, 1] images): FGSM 0.04, IGSM 0.03, the Gradient Attack 0.04; DeepFool,
JSMA, L-BFGS and C&W find minimal perturbations (their RMSE is reported); PGD
is the standard 8/255 L-inf, 10 steps. Defenses: JPEG q75 (the baseline of
Table 4.7), wavelet denoising (WD: BayesShrink, soft, sigma 0.04, db1, YCbCr),
pixel deflection guided by R-CAM (PD: 100 deflections, window 10) and the
thesis's PD + WD, single draw and Ens-10. The adaptive column (BPDA + EOT,
8 draws for the randomised defenses) is computed for the gradient attacks.

The jpeg_dl report is `JPEG_DL.md`'s protocol: FGSM and PGD (L-inf, 5 steps,
random start, step 2.5 eps / 5) at eps in linspace(1, 4, 10) / 255 on the whole
test split, with gradients through the soft quantizer and with BPDA.
"""

import numpy as np
from ml_collections import ConfigDict

from jaxcomp import config_lib

_PD = dict(deflections=100, window=10)
_WD = dict(sigma=0.04, method="BayesShrink", mode="soft", wavelet="db1")


def _defense(stages, group="", **kwargs):
  spec = dict(stages=stages, group=group)
  if "pd" in stages.split("+"):
    spec.update(_PD)
  if "wd" in stages.split("+"):
    spec.update(_WD)
  if "jpeg" in stages.split("+"):
    spec["quality"] = 75
  spec.update(kwargs)
  return ConfigDict(spec)


def _thesis_attacks(runlocal):
  steps = 2 if runlocal else None
  a = ConfigDict()
  a.fgsm = ConfigDict(dict(method="fgsm", eps=0.04, norm="linf"))
  a.ga = ConfigDict(dict(method="fgsm", eps=0.04, norm="rmse"))
  a.igsm = ConfigDict(dict(method="bim", eps=0.03, norm="linf", num_steps=steps or 10))
  a.pgd = ConfigDict(dict(method="pgd", eps=8 / 255, norm="linf", num_steps=steps or 10))
  a.deepfool = ConfigDict(dict(method="deepfool", overshoot=0.02, max_iter=steps or 50))
  a.jsma = ConfigDict(dict(method="jsma", theta=1.0, gamma=0.01 if runlocal else 0.1))
  # Quasi-Newton steps converge in tens of iterations (Adam for C&W needs more).
  a.lbfgs = ConfigDict(dict(method="lbfgs", binary_search_steps=steps or 3,
                            num_steps=steps or 30))
  a.cw = ConfigDict(dict(method="carlini_wagner_l2", binary_search_steps=steps or 5,
                         num_steps=steps or 100, learning_rate=0.01, c_init=0.1))
  for i, name in enumerate(("fgsm", "ga", "igsm", "pgd", "deepfool", "jsma", "lbfgs", "cw")):
    a[name].order = i
  return a


def _number(section):
  """Report order = the order of insertion (ConfigDict itself sorts its keys)."""
  for i, name in enumerate(section):
    section[name]["order"] = i
  return section


def get_config(arg=None):
  a = config_lib.parse_arg(arg, report="table", checkpoints="", num_examples=-1, seed=0,
                           attacks="", runlocal=False)
  c = config_lib.base_config()
  c.mode = "robustness"
  c.seed = a.seed
  r = c.robustness
  r.report = a.report
  r.checkpoints = a.checkpoints
  if a.report == "jpeg_dl":
    r.num_examples = 0
    r.only_correct = False
    r.adaptive = False
    r.eps = tuple(float(e) for e in np.linspace(1, 4, 10) / 255)
    r.attacks = ConfigDict(dict(
        fgsm=ConfigDict(dict(method="fgsm", norm="linf", order=0)),
        pgd=ConfigDict(dict(method="pgd", norm="linf", num_steps=5, random_start=True,
                            order=1))))
  elif a.report == "ablation":
    r.adaptive = False
    r.attacks = _thesis_attacks(a.runlocal)
    d = {}
    # Table 4.7: combinations of JPEG, wavelet denoising and pixel deflection.
    g = "Table 4.7 (combinations)"
    d["JPEG"] = _defense("jpeg", g)
    d["WD"] = _defense("wd", g)
    d["PD"] = _defense("pd", g)
    d["PD+JPEG"] = _defense("pd+jpeg", g)
    d["PD+WD+JPEG"] = _defense("pd+wd+jpeg", g)
    d["PD+WD"] = _defense("pd+wd", g)
    # Table 4.8: thresholding after pixel deflection (SUREShrink is not implemented).
    g = "Table 4.8 (thresholding after PD)"
    d["hard BayesShrink"] = _defense("pd+wd", g, mode="hard")
    d["VisuShrink"] = _defense("pd+wd", g, method="VisuShrink")
    d["BayesShrink"] = _defense("pd+wd", g)
    # Table 4.9: deflections at window 10; Table 4.10 / 4.11: windows at 100 deflections.
    for k in (10, 100, 1000):
      d[f"K={k}"] = _defense("pd+wd", "Table 4.9 (deflections, window 10)", deflections=k)
    for w in (5, 10, 50, 100):
      d[f"r={w}"] = _defense("pd+wd", "Tables 4.10-4.11 (window, 100 deflections)", window=w)
    r.defenses = ConfigDict(_number(d))
  else:
    r.attacks = _thesis_attacks(a.runlocal)
    r.adaptive_attacks = ("fgsm", "ga", "igsm", "pgd")
    r.defenses = ConfigDict(_number({
        "JPEG q75": _defense("jpeg"), "WD": _defense("wd"), "PD": _defense("pd"),
        "PD+WD": _defense("pd+wd"), "PD+WD Ens-10": _defense("pd+wd", votes=10)}))
  if a.attacks:
    keep = a.attacks.split("+")
    unknown = sorted(set(keep) - set(r.attacks))
    if unknown:
      raise config_lib.ConfigError(f"attacks={a.attacks!r}: unknown {unknown}; "
                                   f"known: {sorted(r.attacks)}")
    r.attacks = ConfigDict({n: s for n, s in r.attacks.items() if n in keep})
    r.adaptive_attacks = tuple(n for n in r.adaptive_attacks if n in keep)
    if not r.adaptive_attacks:  # () would mean "every attack" to the runner
      r.adaptive = False
  if a.num_examples >= 0:
    r.num_examples = a.num_examples
  if a.runlocal:
    r.num_examples = a.num_examples if a.num_examples >= 0 else 16
    r.batch_size = 8
    r.eot_samples = 2
    if a.report == "table":
      r.defenses["PD+WD Ens-10"].votes = 3
  return c
