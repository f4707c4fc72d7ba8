"""Benchmark: a preset from scratch on this machine -- wall time of training, sampling, and sample quality per step.

    .venv/bin/python benchmarks/bench_presets.py --preset digits --write
    .venv/bin/python benchmarks/bench_presets.py --preset mnist --data-dir ../shared/datasets/mnist --write

Trains the preset exactly as `diffusionlab train --preset P` does (checkpoints every --every steps are
kept), times the whole run, then draws --n DDIM-50 samples from each checkpoint. For 8x8 digits each
set is judged by the independent classifier (`diffusionlab classify`). Writes the section
"## Preset: P" of BENCHMARKS.md with --write. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

CLI = [sys.executable, "-m", "diffusionlab.cli"]


def run(*args: str) -> str:
    """Run the CLI and return stdout; stop with its stderr on failure."""
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr}")
    return proc.stdout


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=("digits", "mnist"), default="digits")
    ap.add_argument("--data-dir", help="dataset directory (mnist)")
    ap.add_argument("--every", type=int, default=500, help="checkpoint interval to evaluate")
    ap.add_argument("--n", type=int, default=200, help="samples per checkpoint")
    ap.add_argument("--out", help="run directory (default: a temporary one)")
    ap.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    args = ap.parse_args(argv)

    out = Path(args.out or tempfile.mkdtemp(prefix=f"bench-{args.preset}-")) / "run"
    train = ["train", "--preset", args.preset, "--out", str(out), "--checkpoint-every", str(args.every),
             "--keep-checkpoints", "1000", "--progress", "lines"]
    if args.data_dir:
        train += ["--data-dir", args.data_dir]
    t0 = time.perf_counter()
    run(*train)
    train_s = time.perf_counter() - t0
    rows = ["| step | sampling time (s) | result |", "|---|---|---|"]
    for ckpt in sorted((out / "checkpoints").iterdir()):
        step = int(ckpt.name.split("_")[1])
        npz = out / f"bench-{step}.npz"
        t0 = time.perf_counter()
        run("sample", str(out), "--checkpoint", str(ckpt), "--n", str(args.n), "--sampler", "ddim", "--steps", "50",
            "--out", str(npz))  # DDIM-50, as its rows were measured (mnist now recommends dpmpp2m)
        sample_s = time.perf_counter() - t0
        if args.preset == "digits":
            rep = json.loads(run("classify", str(npz), "--json"))
            result = f"{rep['classes_found']}/10 classes, {rep['confident_fraction']:.0%} confident"
        else:
            result = f"grid: {npz.with_suffix('.png')}"
        rows.append(f"| {step} | {sample_s:.1f} | {result} |")
        print(rows[-1], flush=True)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    body = "\n".join([
        f"- Date: {dt.date.today()}; machine: {machine()}",
        f"- Command: `python benchmarks/bench_presets.py --preset {args.preset}"
        + (f" --data-dir {args.data_dir}" if args.data_dir else "") + "`",
        f"- Training: {metrics[-1]['step']} steps in {train_s / 60:.1f} min wall-clock (process start to exit, "
        f"including data loading and the training-time grids); median {sorted(m['it_per_s'] for m in metrics)[len(metrics) // 2]:.2f} it/s; "
        f"final loss {metrics[-1]['loss']:.4f}",
        f"- Samples: {args.n} per checkpoint, DDIM 50 steps, EMA weights; sampling time includes process start.",
        "",
        *rows,
    ])
    print(body)
    if args.write:
        write_section(f"## Preset: {args.preset}", body)


if __name__ == "__main__":
    main()
