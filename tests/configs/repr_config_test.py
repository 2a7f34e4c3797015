"""configs/repr.py: every variant and method validates, the baseline arm differs from the
RePr arms by the rounds only, and the schedules fit in their runs."""

import importlib.util
import pathlib

import jax
import pytest

from jaxcomp import config_lib
from jaxcomp import parallel
from jaxcomp.tasks import repr_task

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("repr_configs", ROOT / "configs" / "repr.py")
repr_configs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repr_configs)


@pytest.mark.parametrize("variant", repr_configs._VARIANTS)
@pytest.mark.parametrize("method", ["standard", *repr_task.RANKINGS.names()])
def test_every_variant_and_method_validates(variant, method):
  c = config_lib.validate(repr_configs.get_config(f"variant={variant},method={method}"))
  assert c.task == "repr"
  baseline = repr_configs.get_config(f"variant={variant},method=standard")
  assert baseline.repr.rounds == 0 and (c.repr.rounds > 0) == (method != "standard")
  assert baseline.optim.to_dict() == c.optim.to_dict()       # same recipe both arms
  assert baseline.train.to_dict() == c.train.to_dict()
  assert baseline.data.to_dict() == c.data.to_dict()


def test_arguments_reach_the_config():
  c = repr_configs.get_config("variant=c3_cpu,method=weight_norm,augment=cifar,seed=2,s1=3,"
                              "s2=2,rounds=2,fraction=0.5,ortho_loss=0.01,exclude_first=True")
  assert (c.repr.metric, c.data.augment, c.seed) == ("weight_norm", "cifar", 2)
  assert (c.repr.s1_epochs, c.repr.s2_epochs, c.repr.rounds, c.repr.fraction) == (3, 2, 2, 0.5)
  assert c.repr.ortho_loss_weight == 0.01 and c.repr.exclude_first
  assert repr_configs.get_config("variant=c3").data.augment == "none"
  assert repr_configs.get_config("variant=resnet20").data.augment == "cifar"
  with pytest.raises(config_lib.ConfigError, match="variant='c4'"):
    repr_configs.get_config("variant=c4")


@pytest.mark.parametrize("arg", ["variant=sample", "variant=sample,runlocal=True"])
def test_the_schedule_fits_in_the_run(arg):
  c = config_lib.validate(repr_configs.get_config(arg))
  task = repr_task.ReprTask(c, parallel.create_mesh(1, jax.devices()[:1]))
  total = c.train.num_steps or round(c.train.epochs * task.steps_per_epoch)
  steps = task.event_steps(total)
  assert len(steps) == 2 * c.repr.rounds and steps[-1] < total
