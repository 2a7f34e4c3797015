"""Parity of jaxcomp's GDN and entropy models with tensorflow-compression (TFC).

TFC 2.14 needs TensorFlow 2.14 (numpy < 2), which cannot live beside current JAX,
so this runs in two environments:

  # 1. jaxcomp's environment: export parameters (a shipped model's first GDN and
  #    entropy bottleneck, as effective values) and random inputs.
  .venv/bin/python benchmarks/tfc_parity.py export --out /tmp/tfc_parity_inputs.npz

  # 2. a TFC environment (python3.11 -m venv /work/venv-tfc && /work/venv-tfc/bin/pip install
  #    -r requirements-tfc.txt): TFC's outputs on the same parameters and inputs.
  /work/venv-tfc/bin/python benchmarks/tfc_parity.py reference --inputs /tmp/tfc_parity_inputs.npz \
      --out tests/codecs/data/tfc_parity.npz

tests/codecs/tfc_parity_test.py then compares jaxcomp with the stored TFC outputs
(to 1e-5). TFC layers used: `tfc.GDN(alpha_parameter=2, epsilon_parameter=0.5)`
(classic GDN / IGDN, ANCHORS.md), `tfc.GDN()` (simplified), `tfc.NoisyDeepFactorized`
with its variables set to jaxcomp's, and `tfc.NoisyNormal`.
"""

from __future__ import annotations

import argparse

import numpy as np


def export(out: str) -> None:
  """jaxcomp side: parameters and inputs, float32."""
  from jaxcomp.codecs import pretrained  # pylint: disable=g-import-not-at-top
  from jaxcomp.layers import parametrizers  # pylint: disable=g-import-not-at-top

  name = pretrained.list_models()[0]
  _, params, _ = pretrained.load(name)
  gdn = params["g_a"]["gdn_0"]
  eb = params["entropy_bottleneck"]
  rng = np.random.default_rng(0)
  c = gdn["beta"].shape[0]
  arrays = {
      "beta": np.asarray(parametrizers.nonnegative_value(gdn["beta"], minimum=1e-6)),
      "gamma": np.asarray(parametrizers.nonnegative_value(gdn["gamma"])),
      "x": rng.normal(0, 2, (2, 5, 6, c)).astype(np.float32),
      "y": (rng.normal(0, 3, (500, eb["quantiles"].shape[0]))
            + eb["quantiles"][:, 0, 1]).astype(np.float32),
      "gaussian_y": rng.normal(0, 5, 1000).astype(np.float32),
      "gaussian_mu": rng.normal(0, 1, 1000).astype(np.float32),
      "gaussian_sigma": np.exp(rng.uniform(np.log(0.11), np.log(50), 1000)).astype(np.float32),
  }
  arrays.update({k: np.asarray(v, np.float32) for k, v in eb.items()
                 if k.startswith(("matrix_", "bias_", "factor_"))})
  np.savez(out, source_model=np.asarray(name), **arrays)
  print(f"wrote {out} ({name}: GDN with {c} channels, factorized density "
        f"{eb['quantiles'].shape[0]} channels)")


def reference(inputs: str, out: str) -> None:
  """TFC side: the same computations with tensorflow-compression."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_compression as tfc  # pylint: disable=g-import-not-at-top

  d = dict(np.load(inputs))
  results = {}
  for inverse in (False, True):
    classic = tfc.GDN(inverse=inverse, alpha_parameter=2, epsilon_parameter=0.5,
                      beta_parameter=d["beta"], gamma_parameter=d["gamma"])
    simplified = tfc.GDN(inverse=inverse, beta_parameter=d["beta"], gamma_parameter=d["gamma"])
    suffix = "igdn" if inverse else "gdn"
    results[f"classic_{suffix}"] = classic(d["x"]).numpy()
    results[f"simplified_{suffix}"] = simplified(d["x"]).numpy()
  layers = sum(1 for k in d if k.startswith("matrix_"))
  channels = d["y"].shape[-1]
  density = tfc.NoisyDeepFactorized(batch_shape=(channels,),
                                    num_filters=tuple(d["matrix_0"].shape[1] for _ in
                                                      range(layers - 1)))
  for i in range(layers):
    density.base._matrices[i].assign(d[f"matrix_{i}"])  # pylint: disable=protected-access
    density.base._biases[i].assign(d[f"bias_{i}"])  # pylint: disable=protected-access
    if i < layers - 1:
      density.base._factors[i].assign(d[f"factor_{i}"])  # pylint: disable=protected-access
  results["factorized_likelihood"] = density.prob(d["y"]).numpy()
  gaussian = tfc.NoisyNormal(loc=d["gaussian_mu"], scale=d["gaussian_sigma"])
  results["gaussian_likelihood"] = gaussian.prob(d["gaussian_y"]).numpy()
  np.savez_compressed(out, **d, **results, tf_version=np.asarray(tf.__version__),
                      tfc_version=np.asarray(_tfc_version()))
  print(f"wrote {out} with TF {tf.__version__}, TFC {_tfc_version()}")


def _tfc_version() -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  return metadata.version("tensorflow-compression")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  e = sub.add_parser("export")
  e.add_argument("--out", required=True)
  r = sub.add_parser("reference")
  r.add_argument("--inputs", required=True)
  r.add_argument("--out", required=True)
  args = p.parse_args()
  if args.command == "export":
    export(args.out)
  else:
    reference(args.inputs, args.out)


if __name__ == "__main__":
  main()
