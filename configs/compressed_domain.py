"""Classification in the compressed domain: cResNet on hyperprior latents (SPEC Sec. 6, report 004).

  python -m jaxcomp.main --config=configs/compressed_domain.py:quality=3,width=0.25 \
      --workdir=/tmp/cd-latents-q3
  python -m jaxcomp.main --config=configs/compressed_domain.py:quality=3,encoder=joint,width=0.25 \
      --workdir=/tmp/cd-joint-q3
  python -m jaxcomp.main \
      --config=configs/compressed_domain.py:variant=decoded,quality=3,width=0.25 \
      --workdir=/tmp/cd-decoded-q3
  python -m jaxcomp.main --config=configs/compressed_domain.py:variant=pixels,width=0.25 \
      --workdir=/tmp/cd-pixels
  python -m jaxcomp.main --config=configs/compressed_domain.py:runlocal=True --workdir=/tmp/cd-smoke

Arguments: `variant` "latents" (y-hat and sigma-hat, the default), "decoded"
(the codec's reconstructions) or "pixels" (the dataset's images): the last two
are the pixel-domain baselines with the same trunk. `encoder` "frozen"
(cached latents; the codec sits in a frozen optimizer group) or "joint" (the
encoder fine-tuned with the classifier: g_a, h_a, h_s and the entropy model's
density learn with Adam at `codec_lr`; the synthesis g_s and the quantiles
stay frozen, so the streams still decode), with `rate_weight` and
`distortion_weight` (loss CE + a bpp + b D; both 0 by default). `quality`
1..4 picks the shipped `hyperprior-q<quality>` (N=64, M=96, trained for MSE;
`codec=` a weights .npz or a codec run directory instead). `coded=True`: the
report's code's branch widths (as wide as the latent) instead of Table 2's 32.
`width`, `depth`: the cResNet's multipliers (1 = Table 2; the CPU results use
width=0.25). `data` "sample" (the 10,000 / 2,000 CIFAR-10 (JPEG q75) images
shipped with jaxcomp) or "full" (../shared/data/cifar10_jpeg75.zip).
CIFAR's 32x32 images are upsampled 4x to 128x128 before coding (8x8 latents).
Optimizer: SGD momentum 0.9, weight decay 5e-4 (report 004), cosine schedule.
"""

from jaxcomp import config_lib

_DATASETS = {"sample": "cifar10_sample", "full": "cifar10_jpeg75"}
_VARIANTS = ("latents", "decoded", "pixels")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="latents", encoder="frozen", quality=3, codec="",
                           coded=False, width=1.0, depth=1.0, epochs=10.0, batch_size=128,
                           lr=0.05, codec_lr=1e-4, rate_weight=0.0, distortion_weight=0.0,
                           data="sample", runlocal=False)
  if a.variant not in _VARIANTS or a.data not in _DATASETS:
    raise config_lib.ConfigError(f"variant={a.variant!r} / data={a.data!r} must be one of "
                                 f"{_VARIANTS} / {sorted(_DATASETS)}")
  c = config_lib.base_config()
  c.task = "compressed_domain"
  c.data.name = _DATASETS[a.data]
  c.model.name = "cresnet39_coded" if a.coded else "cresnet39"
  cd = c.compressed_domain
  cd.input = a.variant
  cd.encoder = a.encoder
  cd.codec = a.codec or f"hyperprior-q{a.quality}"
  cd.width, cd.depth = a.width, a.depth
  cd.rate_weight, cd.distortion_weight = a.rate_weight, a.distortion_weight
  c.train.batch_size = a.batch_size
  c.train.epochs = a.epochs
  c.train.log_every_steps = 20
  c.eval.batch_size = 250
  c.optim = config_lib.optimizer_config(name="momentum", learning_rate=a.lr, momentum=0.9,
                                        weight_decay=5e-4, schedule="cosine",
                                        warmup_epochs=0.5)
  if a.variant == "latents" and a.encoder == "frozen":
    c.optim_groups = (("^codec/", "frozen"),)
  elif a.variant == "latents":
    c.optim_groups = (("^codec/g_s/", "frozen"), ("^codec/entropy_bottleneck/quantiles$", "frozen"),
                      ("^codec/", dict(name="adam", learning_rate=a.codec_lr, schedule="constant")))
  if a.runlocal:
    config_lib.shrink_for_smoke_test(c)
    c.eval.batch_size = 32
    c.train.progress_bar = False
    cd.width, cd.depth = 0.125, 0.1       # one block per stage
  return c
