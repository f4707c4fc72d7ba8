"""Benchmark: the DDPM / Improved DDPM objective tables at small scale on MNIST.

Trains the `mnist` preset's network for the same number of steps under each objective -- L_simple,
L_hybrid (learned variance), L_vlb (learned variance, importance-sampled t) with the cosine schedule,
and L_simple and L_hybrid with the linear schedule -- two runs at a time, one thread each. Then, for
each run: the variational bound in bits/dim on test images (the full T = 1000 chain) and FID / KID /
precision / recall of DDIM-50 samples and of 100-step ancestral samples with the run's own variance.

    python benchmarks/bench_table2.py --data-dir ../shared/datasets/mnist --steps 1000 --out DIR --write

The papers' claims to check (Ho et al. 2020 Table 2; Nichol & Dhariwal 2021 Tables 1-2): L_simple gives
the best FID and a poor NLL; L_vlb the best NLL and the worst FID; L_hybrid in between on NLL at little
FID cost; cosine beats linear on NLL. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cli, machine, publish  # noqa: E402

HEADING = "## Objectives at small scale (DDPM Table 2 / iDDPM)"
CLI = [sys.executable, "-m", "diffusionlab.cli"]

# name -> (schedule, loss, variance)
RUNS = {
    "simple-cosine": ("cosine", "simple", "beta_tilde"),
    "hybrid-cosine": ("cosine", "hybrid", "learned"),
    "vlb-cosine": ("cosine", "vlb", "learned"),
    "simple-linear": ("linear", "simple", "beta_tilde"),
    "hybrid-linear": ("linear", "hybrid", "learned"),
}


def train_pair(names: list[str], args: argparse.Namespace) -> None:
    """Train up to two runs at once, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for name in names:
        run = Path(args.out) / name
        if (run / "checkpoints" / f"step_{args.steps:08d}").is_dir():
            continue  # finished
        schedule, loss, variance = RUNS[name]
        cmd = [*CLI, "train", "--preset", "mnist", "--data-dir", args.data_dir, "--steps", str(args.steps),
               "--schedule", schedule, "--loss", loss, "--variance", variance, "--out", str(run),
               "--progress", "lines", "--sample-every", "1000000"]
        if (run / "config.json").exists():
            cmd.append("--resume")  # interrupted: continue exactly where it stopped
        procs.append((name, subprocess.Popen(cmd, stdout=open(Path(args.out) / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=env)))
    for name, p in procs:
        if p.wait():
            sys.exit(f"training {name} failed; see {args.out}/{name}.log")


def evaluate(name: str, args: argparse.Namespace) -> dict:
    """NLL bound and FID (DDIM-50 and ancestral-100) of one run, cached in its eval folder."""
    run = Path(args.out) / name
    res = {}
    fids = {"ddim50": ["--sampler", "ddim", "--steps", "50"], "ddpm100": ["--sampler", "ddpm", "--steps", "100"]}
    for key, extra in [("nll", ["--nll", "--nll-n", str(args.nll_n)])] + [
            (k, ["--fid", "--n", str(args.n), *fids[k]]) for k in args.fid.split(",")]:
        path = run / "eval" / f"table2-{key}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            cli("evaluate", str(run), *extra, "--json", str(path), threads=args.threads)
        res[key] = json.loads(path.read_text())
    return res


def main() -> None:
    """Train, evaluate, tabulate."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--n", type=int, default=500, help="samples per FID")
    ap.add_argument("--nll-n", type=int, default=100, help="test images for the bound")
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--fid", default="ddim50,ddpm100", help="FID settings: ddim50 (DDIM-50), ddpm100 (ancestral-100)")
    ap.add_argument("--threads", type=int, default=2, help="threads for evaluation")
    ap.add_argument("--out", required=True)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    names = [n for n in args.runs.split(",") if n]
    for i in range(0, len(names), 2):
        train_pair(names[i : i + 2], args)
    has_anc = "ddpm100" in args.fid.split(",")
    lines = ["| objective | schedule | variance | NLL bound (bits/dim) | L_0 (bits/dim) | FID DDIM-50 | "
             "precision / recall (DDIM-50) |" + (" FID ancestral-100 |" if has_anc else "") + " train min |",
             "|---|---|---|---|---|---|---|" + ("---|" if has_anc else "") + "---|"]
    extractor, floor = "", None
    for name in names:
        r = evaluate(name, args)
        schedule, loss, variance = RUNS[name]
        nll, q1 = r["nll"]["nll"], r["ddim50"]["quality"]
        extractor, floor = q1["extractor"], q1["floor"]
        state = json.loads(sorted((Path(args.out) / name / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())
        anc = f" {r['ddpm100']['quality']['fid']:.1f} |" if has_anc else ""
        lines.append(f"| L_{loss} | {schedule} | {variance} | {nll['bits_per_dim']:.3f} ± {nll['std_error']:.3f} | "
                     f"{nll['decoder_bpd']:.3f} | {q1['fid']:.1f} | {q1['precision']:.2f} / {q1['recall']:.2f} |{anc} "
                     f"{state['elapsed_seconds'] / 60:.1f} |")
    lines.append(f"| real data (train vs test) | | | | | {floor['fid']:.1f} | {floor['precision']:.2f} / "
                 f"{floor['recall']:.2f} |" + (" |" if has_anc else "") + " |")
    body = f"""Machine: {machine()}. Date: {started}.
Command: `python benchmarks/bench_table2.py --data-dir ../shared/datasets/mnist --steps {args.steps} --runs {args.runs} --nll-n {args.nll_n} --n {args.n} --fid {args.fid} --out {args.out} --write`

The `mnist` preset's network (1.1M parameters, batch 64, lr 1e-3, EMA 0.999) trained for {args.steps} steps per
objective (two runs at a time, one thread each). NLL: the full {1000}-term bound (x0 clipped, the run's own
variance) on {args.nll_n} seeded MNIST test images. FID: {args.n} samples against {args.n} MNIST test images
with `{extractor}`.

{chr(10).join(lines)}
"""
    publish(HEADING, body, args.write)


if __name__ == "__main__":
    main()
