"""Ballé et al. 2018 codecs (bmshj2018-hyperprior / -factorized), rate-distortion training.

  python -m jaxcomp.main --config=configs/bmshj2018.py:quality=3 --workdir=/tmp/bmshj2018-q3
  python -m jaxcomp.main --config=configs/bmshj2018.py:variant=factorized,quality=1,small=True \
      --workdir=/tmp/factorized-q1
  python -m jaxcomp.main --config=configs/bmshj2018.py:runlocal=True --workdir=/tmp/rd-smoke

Arguments: `variant` "hyperprior" (default) or "factorized"; `quality` 1..8
(N, M and lambda of SPEC Sec. 3); `distortion` "mse" or "ms_ssim"; `steps`;
`small=True` the CPU-sized setting the shipped weights were trained with
(N=64, M=96, 128x128 crops, batch 8); `runlocal=True` a few steps of a tiny
model for a smoke test. Training data: random crops of ../shared/data/photos
(`--config.data.path=DIR` for others); evaluation: Kodak (`--config.codec.eval_path=DIR`).
"""

from jaxcomp import config_lib


def rd_config(architecture: str, arg=None):
  """The shared body of the rate-distortion configs (bmshj2018.py, bls2017.py)."""
  a = config_lib.parse_arg(arg, variant=architecture, quality=3, distortion="mse",
                           steps=1_000_000, small=False, runlocal=False)
  c = config_lib.base_config()
  c.task = "rate_distortion"
  # The entropy bottleneck's quantiles learn from the auxiliary loss with their own Adam.
  c.optim_groups = (("(^|/)quantiles$", "aux_optim"),)
  c.codec.architecture = a.variant
  c.codec.quality = a.quality
  c.codec.distortion = a.distortion
  c.codec.crop = 256
  c.train.batch_size = 8
  c.train.num_steps = a.steps
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 10_000
  c.train.checkpoint_every_steps = 5_000
  c.eval.batch_size = 1
  # Adam 1e-4 with gradient clipping at norm 1 (CompressAI's training recipe).
  c.optim = config_lib.optimizer_config(name="adam", learning_rate=1e-4, schedule="constant",
                                        grad_clip_norm=1.0)
  if a.small:
    c.codec.num_filters, c.codec.num_latent = 64, 96
    c.codec.crop = 128
    c.train.num_steps = a.steps if a.steps != 1_000_000 else 20_000
    c.train.eval_every_steps = 5_000
    c.train.checkpoint_every_steps = 1_000
    c.optim.learning_rate = 5e-4
  if a.runlocal:
    c.codec.num_filters, c.codec.num_latent = 8, 12
    c.codec.crop = 64
    c.train.num_steps = 4
    c.train.log_every_steps = 2
    c.train.checkpoint_every_steps = 2
    c.train.eval_every_steps = 4
    c.train.progress_bar = False
    c.data.num_eval_examples = 1
  return c


def get_config(arg=None):
  return rd_config("hyperprior", arg)
