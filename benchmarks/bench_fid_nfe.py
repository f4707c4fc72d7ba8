"""Benchmark: sample quality against the number of network evaluations (NFE) on one checkpoint.

Every sampler that applies to a DDPM model (eps, x0 or v output), at several NFE, on the same checkpoint, the
same x_T (seed 0) and the same number of samples, scored by `diffusionlab evaluate --fid` with the same extractor
against the same test images, so the rows are comparable with each other (FID at a few hundred samples is biased upwards; compare rows,
not papers):
- issue 3: ancestral DDPM on the full chain (1000), DDIM with eta 0 and 1 at 10 / 20 / 50 / 100 steps, Improved
  DDPM's strided ancestral sampling with the learned variance at 25 / 50 / 100 steps;
- issue 5: DPM-Solver++(2M) and its SDE form (on the Karras grid, and on the time-uniform grid diffusers uses),
  Heun (EDM Algorithm 1, Karras sigmas), Euler on the probability-flow ODE, reverse-SDE Euler-Maruyama and
  predictor-corrector, all through the sigma-space adapter of the same network; and diffusers'
  DPMSolverMultistepScheduler (dpmsolver++ and sde-dpmsolver++) and EulerDiscreteScheduler driven by the same
  network (benchmarks/diffusers_samplers.py).

    python benchmarks/bench_fid_nfe.py RUN_DIR --n 500 --write
    python benchmarks/bench_fid_nfe.py RUN_DIR --n 200 --only ddpm-1000-eta0 &   # split over processes, then
    python benchmarks/bench_fid_nfe.py RUN_DIR --n 200 --no-run --write          # assemble the finished rows

Finished rows are kept in RUN_DIR/eval/fid_nfe/ and never recomputed. The run must have a learned variance
(the `mnist` preset does). Writes docs/fid_nfe.png. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, cli, machine, publish, score_row  # noqa: E402

HEADING = "## FID against NFE (one checkpoint)"

# (label, sampler, steps, eta); the steps of a sampler give its NFE (Heun: 2 steps - 1, pc: 2 steps).
SETTINGS = [("DDPM (learned variance)", "ddpm", 1000, 0.0)]
SETTINGS += [(f"DDIM eta {eta:g}", "ddim", k, eta) for eta in (0.0, 1.0) for k in (10, 20, 50, 100)]
SETTINGS += [("DDIM eta 0", "ddim", 5, 0.0)]
SETTINGS += [("iDDPM strided (learned variance)", "ddpm", k, 0.0) for k in (25, 50, 100)]
SETTINGS += [("DPM-Solver++(2M)", "dpmpp2m", k, 0.0) for k in (5, 10, 20, 50)]
SETTINGS += [("DPM-Solver++(2M), time grid", "dpmpp2m@time", k, 0.0) for k in (5, 10, 20, 50)]
SETTINGS += [("SDE-DPM-Solver++(2M)", "dpmpp2m-sde", k, 0.0) for k in (5, 10, 20, 50)]
SETTINGS += [("SDE-DPM-Solver++(2M), time grid", "dpmpp2m-sde@time", k, 0.0) for k in (5, 10, 20, 50)]
SETTINGS += [("Heun (EDM Alg. 1)", "heun", k, 0.0) for k in (3, 5, 10, 25)]
SETTINGS += [("Euler, PF-ODE", "euler", k, 0.0) for k in (10, 20, 50)]
SETTINGS += [("Euler, PF-ODE, time grid", "euler@time", k, 0.0) for k in (10, 20, 50)]
SETTINGS += [("reverse SDE (Euler-Maruyama)", "sde", k, 0.0) for k in (50, 100)]
SETTINGS += [("predictor-corrector", "pc", k, 0.0) for k in (50,)]
SETTINGS += [("diffusers DPMSolverMultistep", "diffusers-dpmsolver", k, 0.0) for k in (5, 10, 20, 50)]
SETTINGS += [("diffusers DPMSolverMultistep SDE", "diffusers-dpmsolver-sde", k, 0.0) for k in (5, 10, 20, 50)]
SETTINGS += [("diffusers EulerDiscrete", "diffusers-euler", k, 0.0) for k in (10, 20, 50)]


def evaluate_diffusers(run: Path, sampler: str, steps: int, n: int, path: Path, threads: int | None) -> None:
    """Sample with a diffusers scheduler driving our network, then score the file like every other row."""
    import os

    samples = path.with_suffix(".npz")
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    subprocess.run([sys.executable, str(Path(__file__).with_name("diffusers_samplers.py")), str(run), "--scheduler",
                    sampler.split("-", 1)[1], "--steps", str(steps), "--n", str(n), "--out", str(samples)],
                   check=True, env=env)
    cli("evaluate", str(run), "--fid", "--samples", str(samples), "--json", str(path), threads=threads)
    import numpy as np

    rep = json.loads(path.read_text())
    rep["sampling"] = {"sampler": sampler, "steps": steps, "nfe": int(np.load(samples)["nfe"]), "n": n, "seed": 0}
    path.write_text(json.dumps(rep, indent=1))


def plot(results: list[tuple[str, int, dict]], out: Path) -> None:
    """FID against NFE, one line per sampler, log-scaled NFE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors
    for i, label in enumerate(dict.fromkeys(r[0] for r in results)):
        pts = sorted((nfe, q["fid"]) for lab, nfe, q in results if lab == label)
        style = "--" if label.startswith("diffusers") else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=colors[2 * i % 20 + i // 10], label=label)
    ax.axhline(results[0][2]["floor"]["fid"], color="grey", lw=0.8, label="real-data floor")
    ax.set_xscale("log")
    ax.set_yscale("log")  # FIDs span 16 (floor) to thousands
    ax.set_xlabel("NFE per sample")
    ax.set_ylabel("FID (domain extractor, log scale)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    """Score every setting and optionally write BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", help="comma-separated sampler-steps-eta keys to run (default: all)")
    ap.add_argument("--no-run", action="store_true", help="only assemble the rows already computed")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    run = Path(args.run_dir)
    out_dir = run / "eval" / "fid_nfe"
    out_dir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    results = []
    for label, sampler, steps, eta in SETTINGS:
        key = f"{sampler}-{steps}-eta{eta:g}"
        if args.only and key not in args.only.split(","):
            continue
        if sampler.startswith("diffusers-"):
            path = out_dir / f"{key}-n{args.n}.json"
            if not path.exists() and args.no_run:
                continue
            if not path.exists():
                evaluate_diffusers(run, sampler, steps, args.n, path, args.threads)
            rep = json.loads(path.read_text())
        else:
            rep = score_row(run, sampler, steps, eta, args.n, args.threads, run_missing=not args.no_run)
            if rep is None:
                continue
        results.append((label, rep["sampling"]["nfe"], rep["quality"]))
    if not results:
        sys.exit("nothing to report")
    order = {lab: i for i, lab in enumerate(dict.fromkeys(r[0] for r in results))}
    results.sort(key=lambda r: (order[r[0]], r[1]))  # one block per sampler, by NFE
    q0 = results[0][2]
    lines = ["| sampler | NFE | FID | KID | precision | recall |", "|---|---|---|---|---|---|"]
    for label, nfe, q in results:
        lines.append(f"| {label} | {nfe} | {q['fid']:.2f} | {q['kid_mean']:.4f} | {q['precision']:.3f} | {q['recall']:.3f} |")
    f = q0["floor"]
    lines.append(f"| real data floor (train vs test) | - | {f['fid']:.2f} | {f['kid_mean']:.4f} | {f['precision']:.3f} | {f['recall']:.3f} |")
    goals = []
    ddpm = [q["fid"] for lab, nfe, q in results if nfe == 1000 and lab.startswith("DDPM")]
    ours10 = [(q["fid"], lab, nfe) for lab, nfe, q in results if nfe <= 10 and not lab.startswith("diffusers")]
    if ddpm and ours10:
        fid, lab, nfe = min(ours10)
        goals.append(f"- Best of ours at <= 10 NFE: {lab} at {nfe} NFE, FID {fid:.2f} vs DDPM-1000 {ddpm[0]:.2f} "
                     f"({100 * (fid / ddpm[0] - 1):+.1f}%; goal: within +10%).")
    same = {"diffusers DPMSolverMultistep": ("DPM-Solver++(2M)", "DPM-Solver++(2M), time grid"),
            "diffusers DPMSolverMultistep SDE": ("SDE-DPM-Solver++(2M)", "SDE-DPM-Solver++(2M), time grid"),
            "diffusers EulerDiscrete": ("Euler, PF-ODE", "Euler, PF-ODE, time grid")}
    for lab, nfe, q in results:
        if lab.startswith("diffusers"):
            for twin_label in same[lab]:  # the same algorithm: only the implementation (and the sigma grid) differs
                twin = [q2["fid"] for l2, n2, q2 in results if n2 == nfe and l2 == twin_label]
                if twin:
                    goals.append(f"- {nfe} NFE, same algorithm: ours {twin_label} FID {twin[0]:.2f} vs {lab} "
                                 f"{q['fid']:.2f} ({twin[0] / q['fid']:.2f}x; {'no worse' if twin[0] <= q['fid'] else 'worse'}).")
            mine = [(q2["fid"], l2) for l2, n2, q2 in results if n2 == nfe and not l2.startswith("diffusers")]
            if mine:
                fid, l2 = min(mine)
                goals.append(f"- {nfe} NFE, our best sampler: {l2} FID {fid:.2f} vs {lab} {q['fid']:.2f} "
                             f"({'no worse' if fid <= q['fid'] else 'worse'}).")
    plot(results, ROOT / "docs" / "fid_nfe.png")
    step = int(sorted((run / "checkpoints").iterdir())[-1].name.split("_")[1])
    body = f"""Machine: {machine()}. Date: {started}.
Command: `python benchmarks/bench_fid_nfe.py {args.run_dir} --n {args.n} --write`

Checkpoint: `{run}` (step {step}, EMA weights).
{args.n} samples per row, seed 0, x0 clipped; scored against {q0['n_real']} MNIST test images with `{q0['extractor']}`.

{chr(10).join(lines)}

![FID against NFE](docs/fid_nfe.png)

{chr(10).join(goals)}
"""
    publish(HEADING, body, args.write)


if __name__ == "__main__":
    main()
