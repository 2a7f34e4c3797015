"""Experiments of thesis 001 with the shipped MS-ROI network: Table 2.1 (Kodak) and Table 3.1.

  python launch/msroi_tables.py kodak --images ../shared/data/kodak --out OUT.json
  python launch/msroi_tables.py defense --checkpoint RUN --num-examples 128 --seeds 0 1 2 \
      --out OUT.json

`kodak`: Table 2.1 (standard JPEG q50 vs MS-ROI JPEG at equal size within
+-1 %, `jaxcomp.msroi.evaluate.compare`; an image whose size no Q_f matches is
left out of the means and named) for each map of `--maps`: "network" (the
shipped network at full resolution, the thesis), "network@S" (the network run
at short side S, `saliency_map(short_side=S)`), "center" (a centre bias, no
network).

`defense`: Table 3.1's columns on the test split of a trained classification
run (`RUN`: a `python -m jaxcomp.main` workdir): `num_examples` test images the
classifier gets right, drawn per seed; FGSM and PGD (L-inf eps 0.02, i.e. RMSE
<= 0.02, the thesis's budget, Sec. 3.7; PGD 10 steps); defenses built by name
from `DEFENSE_STAGES` exactly as the robustness runner builds them (JPEG at
each level of MS-ROI, "msroi", "aug_msroi"); accuracy non-adaptive (the attack
sees the bare classifier) and adaptive (PGD through BPDA + EOT,
`robustness.evaluate`), and MSE (on a 0-255 scale), SSIM, PSNR of the
defended adversarial image against the clean original (non-adaptive attacks).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import attacks as attacks_lib
from jaxcomp import metrics, writers


def _kodak(args: argparse.Namespace) -> dict[str, Any]:
  from PIL import Image  # noqa: PLC0415

  from jaxcomp.msroi import evaluate as evaluation  # noqa: PLC0415
  from jaxcomp.msroi import maps  # noqa: PLC0415
  files = sorted(pathlib.Path(args.images).glob("*.png"))[:args.limit or None]
  out = {}
  for name in args.maps:
    if name.startswith("network@"):
      map_fn = jax.jit(functools.partial(maps.saliency_map, short_side=int(name.split("@")[1])))
    else:
      map_fn = evaluation.map_function(name)
    start, rows, unmatched = time.perf_counter(), [], []
    for f in files:
      image = np.asarray(Image.open(f).convert("RGB"))
      saliency = evaluation.compute_map(map_fn, image)
      try:   # equal size within +-1 %, else the image is left out and named
        row, _ = evaluation.compare(image, saliency, quality_std=args.quality)
      except ValueError as e:
        unmatched.append({"image": f.name, "error": str(e)})
        continue
      rows.append({"image": f.name, **row})
    mean = {n: {s: {k: float(np.mean([r[n][s][k] for r in rows]))
                    for k in ("psnr_s", "psnr", "ssim", "ms_ssim")} for s in evaluation.SPACES}
            for n in ("standard", "msroi")}
    out[name] = {"images": rows, "unmatched": unmatched, "mean": mean,
                 "salient_fraction": float(np.mean([r["salient_fraction"] for r in rows])),
                 "seconds": time.perf_counter() - start}
    print(f"{name}: {len(rows)} images matched, {len(unmatched)} not "
          f"({[u['image'] for u in unmatched]})", flush=True)
    for space in ("luma", "rgb"):
      print(f"{name:12s} {space:4s} " + "  ".join(
          f"{k}: {mean['standard'][space][k]:.4f} -> {mean['msroi'][space][k]:.4f}"
          for k in ("psnr_s", "psnr", "ssim", "ms_ssim")), flush=True)
  return out


def _defenses(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
  """The defenses of Table 3.1 as robustness-runner specs (`build_defense`)."""
  common = dict(short_side=args.short_side)
  specs = {f"JPEG q{q}": dict(stages="jpeg", quality=q) for q in args.jpeg}
  specs["MS-ROI"] = dict(stages="msroi", **common)
  specs["Aug-MSROI"] = dict(stages="aug_msroi", num_perturbations=args.num_perturbations,
                            jitter=args.jitter, **common)
  return specs


def _write(args: argparse.Namespace, result: dict[str, Any]) -> None:
  result["command"] = " ".join(["python launch/msroi_tables.py", *sys.argv[1:]])
  writers.write_atomic(args.out, json.dumps(result, indent=1))


def _defense(args: argparse.Namespace) -> None:
  """Runs the seeds one after the other, writing the results after each."""
  from jaxcomp.evaluators import adversarial, robustness  # noqa: PLC0415
  from jaxcomp.evaluators.runs import load_run  # noqa: PLC0415
  task, variables = load_run(args.checkpoint)
  apply_fn = task.apply_fn        # one object: the non-adaptive attacks get exactly this one
  attacks = {"FGSM": functools.partial(attacks_lib.fgsm, eps=args.eps, norm="linf"),
             "PGD": functools.partial(attacks_lib.pgd, eps=args.eps, norm="linf",
                                      num_steps=args.pgd_steps)}
  specs = _defenses(args)
  built = {n: adversarial.build_defense(n, s) for n, s in specs.items()}
  defenses = {n: d for n, (d, _) in built.items()}
  eot = {n: args.eot if m["random"] else 1 for n, (_, m) in built.items()}
  quality = jax.jit(lambda x, y: {
      "mse": jnp.mean((255.0 * (x - y)) ** 2, axis=(1, 2, 3)),
      "ssim": metrics.ssim(x, y), "psnr": metrics.psnr(x, y)})
  runs = []
  for seed in args.seeds:
    batches = adversarial.evaluation_batches(task, variables, num_examples=args.num_examples,
                                             only_correct=True, batch_size=args.batch_size,
                                             seed=seed)
    stash: list[tuple[str, jax.Array, jax.Array]] = []   # (attack, clean, adversarial)

    def recording(name, attack, model, params, images, labels, key):
      adv, info = attack(model, params, images, labels, key)
      if model is apply_fn:                         # the non-adaptive attack
        stash.append((name, images, adv))
      return adv, info

    start = time.perf_counter()
    records = robustness.evaluate(
        apply_fn, variables, batches,
        attacks={n: functools.partial(recording, n, a) for n, a in attacks.items()},
        defenses=defenses, key=jax.random.key(seed), adaptive=True,
        adaptive_attacks=("PGD",), eot_samples=eot,
        log=lambda s: print(f"[seed {seed}] {s}", file=sys.stderr, flush=True))
    scores: dict[str, dict[str, list[float]]] = {}
    for i, (aname, clean, adv) in enumerate(stash):
      for dname, d in {"none": lambda x, k: x, **defenses}.items():
        q = jax.device_get(quality(d(adv, jax.random.key(10_000 + i)), clean))
        cell = scores.setdefault(f"{aname}/{dname}", {})
        for k, v in q.items():
          cell.setdefault(k, []).extend(np.asarray(v).tolist())
    run = {"seed": seed, "images": sum(len(y) for _, y in batches),
           "seconds": time.perf_counter() - start,
           "records": [{"attack": r.attack, "defense": r.defense, "adaptive": r.adaptive,
                        "count": r.count, "accuracy": r.accuracy, "rmse": r.rmse,
                        "destruction_rate": r.destruction_rate} for r in records],
           "quality": {c: {k: float(np.mean(v)) for k, v in q.items()}
                       for c, q in scores.items()}}
    runs.append(run)
    print(robustness.format_table(records), flush=True)
    print(json.dumps(run["quality"], indent=1), flush=True)
    _write(args, {"checkpoint": args.checkpoint, "defenses": specs, "eps": args.eps,
                  "pgd_steps": args.pgd_steps, "eot": args.eot, "runs": runs})


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  k = sub.add_parser("kodak", help="Table 2.1 on a folder of PNGs")
  k.add_argument("--images", default="../shared/data/kodak")
  k.add_argument("--maps", nargs="+", default=["network", "network@192", "center"])
  k.add_argument("--limit", type=int, default=0, help="first N images (0: all)")
  k.add_argument("--quality", type=int, default=50, help="the standard JPEG's quality")
  d = sub.add_parser("defense", help="Table 3.1 on a trained classification run")
  d.add_argument("--checkpoint", required=True)
  d.add_argument("--num-examples", type=int, default=64)
  d.add_argument("--batch-size", type=int, default=64)
  d.add_argument("--seeds", type=int, nargs="+", default=[0])
  d.add_argument("--eps", type=float, default=0.02)
  d.add_argument("--pgd-steps", type=int, default=10)
  d.add_argument("--eot", type=int, default=2, help="EOT draws for the random defenses")
  d.add_argument("--jpeg", type=int, nargs="+", default=[50], help="JPEG baselines' qualities")
  d.add_argument("--short-side", type=int, default=64)
  d.add_argument("--jitter", type=int, default=4)
  d.add_argument("--num-perturbations", type=int, default=5)
  for s in (k, d):
    s.add_argument("--out", required=True, help="JSON file of the results")
  args = p.parse_args(argv)
  if args.command == "kodak":
    _write(args, _kodak(args))
  else:
    _defense(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
