"""Benchmark: sample quality per CPU budget on MNIST -- our `mnist` preset against diffusers' recipe.

Both train for the same wall-clock budget at the same time on the same machine (one thread each, so
neither steals the other's core), then draw the same number of samples with a 50-step DDIM sampler,
and both sample sets are scored by `diffusionlab evaluate FILE.npz --fid` with the same extractor
against the MNIST test split, with the real-data floor beside them.

    python benchmarks/bench_quality_budget.py --data-dir ../shared/datasets/mnist --minutes 20 --out DIR --write

Needs the `bench` extra (diffusers). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "diffusionlab.cli"]
HEADING = "## Quality per CPU budget: mnist preset vs diffusers"


def evaluate(npz: Path, data_dir: str) -> dict:
    """`diffusionlab evaluate FILE.npz --fid` against the MNIST test split; returns the report's quality part."""
    out = npz.with_suffix(".eval.json")
    proc = subprocess.run([*CLI, "evaluate", str(npz), "--fid", "--dataset", "mnist", "--data-dir", data_dir,
                           "--json", str(out), "--overwrite"], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"evaluate failed: {proc.stderr}")
    print(proc.stdout, flush=True)
    return json.loads(out.read_text())["quality"]


def row_of(name: str, steps: int, secs: float, q: dict) -> str:
    """One table row: steps, training minutes and the quality metrics."""
    is_ = f"{q['inception_score'][0]:.2f}" if q.get("inception_score") else "-"
    return (f"| {name} | {steps} | {secs / 60:.1f} | {q['fid']:.2f} | {q['kid_mean']:.4f} | {q['precision']:.3f} | "
            f"{q['recall']:.3f} | {is_} |")


def main() -> None:
    """Train both for --minutes side by side, sample, score, and optionally write BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--n", type=int, default=1000, help="samples per model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-train", action="store_true", help="reuse the runs already in --out")
    ap.add_argument("--engine-row", action="store_true",
                    help="also train diffusers' UNet2DModel under our recipe's lr 1e-3 and cosine schedule (one thread, "
                         "--minutes) unless DIR/diffusers_our_recipe exists, to separate the recipe from the engine")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ours_run, theirs_dir = out / "ours", out / "diffusers"
    ours_npz = out / "ours_samples.npz"
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    if not args.skip_train:
        ours_cmd = [*CLI, "train", "--preset", "mnist", "--data-dir", args.data_dir, "--minutes", str(args.minutes),
                    "--out", str(ours_run), "--progress", "lines", "--sample-every", "1000000"]
        theirs_cmd = [sys.executable, str(HERE / "diffusers_recipe.py"), "--data-dir", args.data_dir,
                      "--minutes", str(args.minutes), "--n", str(args.n), "--out", str(theirs_dir)]
        with open(out / "ours.log", "w") as lo, open(out / "diffusers.log", "w") as ld:
            p1 = subprocess.Popen(ours_cmd, stdout=lo, stderr=subprocess.STDOUT, env=env)
            p2 = subprocess.Popen(theirs_cmd, stdout=ld, stderr=subprocess.STDOUT, env=env)
            if p1.wait() or p2.wait():
                sys.exit(f"training failed; see {out}/ours.log and {out}/diffusers.log")
        t0 = time.perf_counter()
        subprocess.run([*CLI, "sample", str(ours_run), "--n", str(args.n), "--sampler", "ddim", "--steps", "50",
                        "--out", str(ours_npz)], check=True, env=env)
        (out / "ours_sample_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}")
    engine_dir = out / "diffusers_our_recipe"
    if args.engine_row and not (engine_dir / "metrics.json").exists():
        with open(out / "diffusers_our_recipe.log", "w") as log:
            subprocess.run([sys.executable, str(HERE / "diffusers_recipe.py"), "--data-dir", args.data_dir, "--minutes",
                            str(args.minutes), "--n", str(args.n), "--lr", "1e-3", "--beta-schedule", "squaredcos_cap_v2",
                            "--out", str(engine_dir)], stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    ours_q, theirs_q = evaluate(ours_npz, args.data_dir), evaluate(theirs_dir / "samples.npz", args.data_dir)
    engine_row = ""
    if (engine_dir / "metrics.json").exists():
        engine_m = json.loads((engine_dir / "metrics.json").read_text())
        engine_row = "\n" + row_of("diffusers engine under our recipe's lr 1e-3 and cosine schedule (fixed variance, L_simple)",
                                   engine_m["steps"], engine_m["train_seconds"], evaluate(engine_dir / "samples.npz", args.data_dir))
    ours_state = json.loads(sorted((ours_run / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())
    ours_cfg = json.loads((ours_run / "config.json").read_text())
    theirs_m = json.loads((theirs_dir / "metrics.json").read_text())
    ours_steps = int(sorted((ours_run / "checkpoints").iterdir())[-1].name.split("_")[1])

    proc = ours_cfg["process"]
    from diffusionlab.runs import load_run

    ours_params = sum(p.numel() for p in load_run(ours_run).net.parameters())
    body = f"""Machine: {machine()}. Date: {started}.
Command: `python benchmarks/bench_quality_budget.py --data-dir ../shared/datasets/mnist --minutes {args.minutes:g} --out {args.out} --write`

Both models train for {args.minutes:g} minutes **at the same time, one thread each**, with the same network
size (our UNet base 32, mult 1-2-2, attention at 7x7: {ours_params:,} parameters, the output layer also emitting
the variance channel; UNet2DModel blocks 32-64-64, one layer per block, attention at 7x7: {theirs_m['params']:,}),
batch 64, and draw {args.n} samples with 50 DDIM steps (eta 0). Scores: `diffusionlab evaluate
FILE.npz --fid` against {ours_q['n_real']} MNIST test images with `{ours_q['extractor']}`.

| model | steps | train min | FID | KID | precision | recall | IS |
|---|---|---|---|---|---|---|---|
{row_of(f"diffusionlab `mnist` preset ({proc['schedule']}, {proc['loss']} loss, {proc['variance']} variance)", ours_steps, ours_state['elapsed_seconds'], ours_q)}
{row_of("diffusers recipe (UNet2DModel + DDPMScheduler, linear, lr 1e-4)", theirs_m['steps'], theirs_m['train_seconds'], theirs_q)}{engine_row}
{row_of("real data floor (train vs test)", 0, 0, ours_q['floor'])}

FID ratio diffusers / ours: **{theirs_q['fid'] / ours_q['fid']:.2f}x** (goal: at least 2x).
"""
    publish(HEADING, body, args.write)


if __name__ == "__main__":
    main()
