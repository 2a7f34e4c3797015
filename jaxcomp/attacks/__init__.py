"""Adversarial attacks, jit-compiled through jax.grad and batched.

Every attack is `attack(apply_fn, params, images, labels, key, *, ...)` with
`apply_fn(params, images) -> logits` (or a `Stochastic` model, see `core`),
images [B, H, W, C] in [0, 1], and returns `(adversarial_images, info)`, info =
{"success", "linf", "l2", "rmse"} per example (see `jaxcomp.attacks.core`).
`ATTACKS` names them for configs (`robustness.attacks.<name>.method`); a new
attack is one module and one registration here.
"""

from jaxcomp.attacks.adaptive import bpda, defended, eot
from jaxcomp.attacks.budgets import NORMS, l2, linf, project, rmse
from jaxcomp.attacks.carlini_wagner import carlini_wagner_l2
from jaxcomp.attacks.core import Stochastic
from jaxcomp.attacks.deepfool import deepfool
from jaxcomp.attacks.fgsm import bim, fgsm
from jaxcomp.attacks.jsma import jsma
from jaxcomp.attacks.lbfgs import lbfgs
from jaxcomp.attacks.pgd import pgd
from jaxcomp.registry import Registry

ATTACKS = Registry("attack")
for _attack in (fgsm, bim, pgd, carlini_wagner_l2, deepfool, jsma, lbfgs):
  ATTACKS.register(_attack.__name__, _attack)
del _attack

__all__ = ["ATTACKS", "NORMS", "Stochastic", "bim", "bpda", "carlini_wagner_l2", "deepfool", "defended",
           "eot", "fgsm", "jsma", "l2", "lbfgs", "linf", "pgd", "project", "rmse"]
