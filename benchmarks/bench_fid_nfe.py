"""Benchmark: sample quality against the number of network evaluations (NFE) on one checkpoint.

Samplers: ancestral DDPM on the full chain (1000), DDIM with eta 0 and 1 at 10 / 20 / 50 / 100 steps, and
Improved DDPM's strided ancestral sampling with the learned variance at 25 / 50 / 100 steps. Every set
has the same number of samples and the same seed, and is scored by `diffusionlab evaluate --fid` with
the same extractor against the same test images, so the rows are comparable with each other (FID at a
few hundred samples is biased upwards; compare rows, not papers).

    python benchmarks/bench_fid_nfe.py RUN_DIR --n 500 --write

The run must have a learned variance (the `mnist` preset does). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cli, machine, publish  # noqa: E402

HEADING = "## FID against NFE (one checkpoint)"

# (label, sampler, steps, eta)
SETTINGS = [("DDPM (learned variance)", "ddpm", 1000, 0.0)]
SETTINGS += [(f"DDIM eta {eta:g}", "ddim", k, eta) for eta in (0.0, 1.0) for k in (10, 20, 50, 100)]
SETTINGS += [("iDDPM strided (learned variance)", "ddpm", k, 0.0) for k in (25, 50, 100)]


def main() -> None:
    """Score every setting and optionally write BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", help="comma-separated sampler-steps-eta keys to run (default: all)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    run = Path(args.run_dir)
    out_dir = run / "eval" / "fid_nfe"
    out_dir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    results = []
    for label, sampler, steps, eta in SETTINGS:
        key = f"{sampler}-{steps}-eta{eta:g}"
        path = out_dir / f"{key}-n{args.n}.json"
        if args.only and key not in args.only.split(","):
            continue
        if not path.exists():  # resumable: a finished setting is not recomputed
            t0 = time.perf_counter()
            cli("evaluate", str(run), "--fid", "--n", str(args.n), "--sampler", sampler, "--steps", str(steps),
                "--eta", str(eta), "--json", str(path), threads=args.threads)
            print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
        rep = json.loads(path.read_text())
        results.append((label, rep["sampling"]["nfe"], rep["quality"]))
    if not results:
        sys.exit("nothing to report")
    q0 = results[0][2]
    lines = ["| sampler | NFE | FID | KID | precision | recall |", "|---|---|---|---|---|---|"]
    for label, nfe, q in results:
        lines.append(f"| {label} | {nfe} | {q['fid']:.2f} | {q['kid_mean']:.4f} | {q['precision']:.3f} | {q['recall']:.3f} |")
    f = q0["floor"]
    lines.append(f"| real data floor (train vs test) | - | {f['fid']:.2f} | {f['kid_mean']:.4f} | {f['precision']:.3f} | {f['recall']:.3f} |")
    step = int(sorted((run / "checkpoints").iterdir())[-1].name.split("_")[1])
    body = f"""Machine: {machine()}. Date: {started}.
Command: `python benchmarks/bench_fid_nfe.py {args.run_dir} --n {args.n} --write`

Checkpoint: `{run}` (step {step}, EMA weights).
{args.n} samples per row, seed 0, x0 clipped; scored against {q0['n_real']} MNIST test images with `{q0['extractor']}`.

{chr(10).join(lines)}
"""
    publish(HEADING, body, args.write)


if __name__ == "__main__":
    main()
