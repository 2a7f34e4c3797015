"""Two tiny trained runs (with and without a JPEG-DL layer) that the evaluators read."""

import pytest

from jaxcomp import config_lib
from jaxcomp import train


@pytest.fixture(scope="session")
def jpeg_dl_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  c = config_lib.base_config()
  c.model.name = "convnet_c2_32"   # the smallest zoo model: the flow is what is tested
  c.model.jpeg_layer = True
  c.optim_groups = (("^jpeg_layer/", "jpeg_optim"),)
  c.model.jpeg.quality_divisor = 12.1
  c.train.num_steps = 2
  c.train.batch_size = 16
  c.train.progress_bar = False
  c.data.num_train_examples = 64
  c.data.num_eval_examples = 48
  c.eval.batch_size = 16
  train.train_and_evaluate(c, str(root / "jdl"))
  c.model.jpeg_layer = False
  c.optim_groups = ()
  train.train_and_evaluate(c, str(root / "base"))
  return root
