"""Sampling throughput at equal quality: our samplers against diffusers' DPMSolverMultistepScheduler, both driving the
same trained network, in float32 and in bf16 autocast.

For each setting: n samples at batch 500 from the run's EMA network (the same x_T for every setting), timed in this
process (wall clock of sampling and decoding, after a warm-up batch), then `diffusionlab evaluate RUN --fid --samples
FILE` (domain extractor, k = 3). The summary compares images/s where the two reach the same FID.

    python benchmarks/bench_sampling_speed.py RUN_DIR --out DIR [--n 2000] [--steps 5,10,20] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cached, cli, machine, on_this_cpu, publish  # noqa: E402

from diffusionlab.data import from_model_range  # noqa: E402
from diffusionlab.runs import load_run  # noqa: E402
from diffusionlab.sampling import generate  # noqa: E402
from diffusionlab.training.precision import cpu_bf16_flags  # noqa: E402

HEADING = "## Sampling throughput at equal FID (issue 18)"
BATCH = 500


def ours(run_dir: Path, sampler: str, steps: int, n: int, precision: str) -> tuple[np.ndarray, int, float]:
    """(uint8 images, NFE, seconds) from our sampler."""
    run = load_run(run_dir, mixed_precision=precision)
    with torch.no_grad():
        generate(run.denoiser, run.process, run.model_shape, 50, sampler, steps, seed=99, batch_size=50)  # warm-up
        t0 = time.perf_counter()
        res = generate(run.denoiser, run.process, run.model_shape, n, sampler, steps, seed=0, batch_size=BATCH,
                       codec=run.codec)
        seconds = time.perf_counter() - t0
    u8 = from_model_range(res.images)
    return u8[:, 0].numpy(), res.nfe, seconds


def peer(run_dir: Path, steps: int, n: int, precision: str) -> tuple[np.ndarray, int, float]:
    """(uint8 images, NFE, seconds) from diffusers' DPM-Solver++(2M) on our network."""
    import diffusers_samplers

    diffusers_samplers.sample(run_dir, "dpmsolver", steps, 50, seed=99, batch_size=50, mixed_precision=precision)
    t0 = time.perf_counter()
    images, nfe = diffusers_samplers.sample(run_dir, "dpmsolver", steps, n, seed=0, batch_size=BATCH,
                                            mixed_precision=precision)
    return images, nfe, time.perf_counter() - t0


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for the samples and the cached scores")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", default="5,10,20")
    ap.add_argument("--sampler", default="dpmpp2m", help="our sampler (the preset's recommendation)")
    ap.add_argument("--heading", default=HEADING, help="the BENCHMARKS.md section --write replaces (made per CPU)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    precisions = ["no", "bf16"] if cpu_bf16_flags() else ["no"]
    rows = []
    for steps in [int(s) for s in args.steps.split(",")]:
        for who in ("ours", "diffusers"):
            for precision in precisions:
                key = f"{who}-{steps}-{precision}-n{args.n}"

                def compute() -> dict:
                    images, nfe, seconds = (ours(args.run_dir, args.sampler, steps, args.n, precision) if who == "ours"
                                            else peer(args.run_dir, steps, args.n, precision))
                    npz = args.out / f"{key}.npz"
                    np.savez_compressed(npz, images=images)
                    report = args.out / f"{key}.eval.json"
                    cli("evaluate", str(args.run_dir), "--fid", "--samples", str(npz), "--json", str(report))
                    q = json.loads(report.read_text())["quality"]
                    return {"nfe": nfe, "seconds": seconds, "fid": q["fid"], "floor": q["floor"]["fid"]}

                r = cached(args.out / f"{key}.json", compute)
                rows.append((who, steps, precision, r))
                print(who, steps, precision, r, flush=True)
    lines = ["| sampler | steps | NFE | network | FID | images/s |", "|---|---|---|---|---|---|"]
    for who, steps, precision, r in rows:
        name = f"ours {args.sampler}" if who == "ours" else "diffusers DPMSolverMultistep (2M)"
        lines.append(f"| {name} | {steps} | {r['nfe']} | {'bf16' if precision == 'bf16' else 'float32'} | "
                     f"{r['fid']:.2f} | {args.n / r['seconds']:.0f} |")
    summary = []
    for precision in precisions:
        label = "float32" if precision == "no" else precision
        mine = [(s, r) for w, s, p, r in rows if w == "ours" and p == precision]
        theirs = [(s, r) for w, s, p, r in rows if w == "diffusers" and p == precision]
        for s, r in mine:  # the cheapest peer setting at least as good, if any
            good = [(s2, r2) for s2, r2 in theirs if r2["fid"] <= r["fid"] * 1.05]
            if good:
                s2, r2 = min(good, key=lambda sr: sr[1]["seconds"])
                summary.append(f"- {label}: ours at {s} steps (FID {r['fid']:.2f}, {args.n / r['seconds']:.0f} "
                               f"img/s) against diffusers' cheapest setting within 5% of that FID, {s2} steps (FID "
                               f"{r2['fid']:.2f}, {args.n / r2['seconds']:.0f} img/s): "
                               f"**{r2['seconds'] / r['seconds']:.2f}x**")
            else:
                summary.append(f"- {label}: ours at {s} steps (FID {r['fid']:.2f}): no diffusers setting measured "
                               "reaches it")
    body = "\n".join([
        f"- Machine: {machine()}; native bf16: {', '.join(cpu_bf16_flags()) or 'none'}",
        f"- Command: `python benchmarks/bench_sampling_speed.py RUN --out DIR --n {args.n} --steps {args.steps} "
        f"{'' if args.heading == HEADING else '--heading H '}--write`, RUN = `{args.run_dir}`; batch {BATCH}, one "
        f"process, default threads; real-data floor FID {rows[0][3]['floor']:.2f}",
        "",
        *lines,
        "",
        *summary,
    ])
    publish(on_this_cpu(args.heading), body, args.write)


if __name__ == "__main__":
    main()
