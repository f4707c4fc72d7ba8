"""Benchmark: training throughput of the `mnist` preset under each way of using (and sharing) the CPU's cores.

Each configuration trains the preset through the CLI for a fixed wall-clock budget and reads its it/s from
metrics.jsonl (median of the 5-step windows after the first); configurations run one after the other, never beside
another benchmark. What it measures:

- one job alone with N threads, in float32 and (where the CPU has native bf16) in bf16, with OpenMP's default
  (spinning) and PASSIVE wait policy; every other row in what `--mixed-precision auto` picks on this CPU;
- data parallelism on one machine: 2 processes x 1 thread (torchrun + Accelerate, gloo) against 1 process x 2 threads;
- two jobs at once (what a user does who starts a second run): both with 2 threads (the thrash), with PASSIVE, with 1
  thread each, and with the default `--threads` planning (the second job starts after the first is running).

    .venv/bin/python benchmarks/bench_threads.py --data-dir ../shared/datasets/mnist [--seconds 45] [--write]
    .venv/bin/python benchmarks/bench_threads.py --data-dir ../shared/datasets/mnist --pairs 4 [--seconds 90] [--write]
    .venv/bin/python benchmarks/bench_threads.py --preset digits --pairs 3 [--seconds 60] [--write]
    .venv/bin/python benchmarks/bench_threads.py --preset folder32 --data-dir ROOT/photos --pairs 3 [--write]
    .venv/bin/python benchmarks/bench_threads.py --preset mnist-ae --data-dir ../shared/datasets/mnist --pairs 3 [--write]
    .venv/bin/python benchmarks/bench_threads.py --preset mnist-ldm --latent AE_RUN --data-dir ../shared/datasets/mnist \
        --pairs 3 [--write]

(ROOT/photos: the folder of 32x32 photograph crops that `benchmarks/bench_folder32.py make --root ROOT` writes.
AE_RUN: any `train-autoencoder --preset mnist-ae` run; the latent network's speed does not depend on its weights.)

`--pairs K` runs only the question behind `--procs auto`: 1 process x 2 threads and 2 processes x 1 thread, alternated
K times (which goes first alternates too), with the median of the K paired ratios.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cpu_name, on_this_cpu, write_section  # noqa: E402

from diffusionlab.training.precision import cpu_bf16_flags  # noqa: E402
from diffusionlab.training.presets import AUTOENCODER_PRESETS, PRESETS  # noqa: E402

HEADING = "## Threads, processes and a shared CPU"  # one section per CPU kind (on_this_cpu)
PAIRS_HEADING = "## Processes against threads, paired (`--procs auto`)"
PY = sys.executable
# The presets --pairs trains, and the batch each one takes (the first stage of latent diffusion is its own command).
PAIR_PRESETS = {name: PRESETS[name]["train"]["batch_size"] for name in ("mnist", "digits", "folder32", "mnist-ldm")}
PAIR_PRESETS["mnist-ae"] = AUTOENCODER_PRESETS["mnist-ae"]["train"]["batch_size"]


def train_cmd(out: Path, data_dir: str | None, seconds: float, precision: str, threads: int | None,
              preset: str = "mnist", latent: str | None = None) -> list[str]:
    """The CLI call for one timed job (`latent`: the autoencoder run a latent preset trains on)."""
    command = "train-autoencoder" if preset in AUTOENCODER_PRESETS else "train"
    cmd = ["-m", "diffusionlab.cli", command, "--preset", preset, "--minutes", f"{seconds / 60:.4f}", "--out",
           str(out), "--log-every", "5", "--sample-every", "1000000", "--checkpoint-every", "1000000",
           "--mixed-precision", precision, "--progress", "lines"]
    return (cmd + (["--data-dir", data_dir] if data_dir else []) + (["--latent", latent] if latent else [])
            + (["--threads", str(threads)] if threads else []))


def its(run: Path) -> float:
    """Median it/s of the run's logged windows after the first (warm-up)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["it_per_s"] for r in rows[1:]] or [r["it_per_s"] for r in rows]
    return statistics.median(rates)


def launch(cmd: list[str], env: dict[str, str], torchrun: int = 0) -> subprocess.Popen:
    """Start one job (under torchrun with `torchrun` processes when > 0)."""
    prefix = [PY] if not torchrun else [str(Path(PY).with_name("torchrun")), "--standalone", "--nproc_per_node",
                                         str(torchrun)]
    return subprocess.Popen(prefix + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> str:
    """Wait for a job; its stderr (the warnings) or an error."""
    out, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"job failed ({p.returncode}): {err[-2000:]}")
    return err


def dated_machine() -> list[str]:
    """The section's date and machine lines."""
    return [f"- Date: {_dt.date.today().isoformat()}",
            f"- Machine: {cpu_name()}, {os.cpu_count()} cores, CPU capability {torch.backends.cpu.get_cpu_capability()}"
            f"; torch {torch.__version__}, Python {platform.python_version()}"]


def command(argv: list[str] | None) -> str:
    """This benchmark's command line, as run."""
    return "python benchmarks/bench_threads.py " + " ".join(argv or sys.argv[1:])


def pairs(args: argparse.Namespace, argv: list[str] | None) -> None:
    """1 process x 2 threads against 2 data-parallel processes x 1 thread, alternated; paired it/s ratios."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    auto = "bf16" if cpu_bf16_flags() else "no"
    load_before = os.getloadavg()[0]
    rows, ratios = [], []
    for k in range(args.pairs):
        rate, extra = {}, {}
        for layout in (("1x2", "2x1") if k % 2 == 0 else ("2x1", "1x2")):
            out = tmp / f"{k}-{layout}"
            procs = 2 if layout == "2x1" else 0
            e = {**env, "OMP_NUM_THREADS": "1"} if procs else env
            start = time.perf_counter()
            finish(launch(train_cmd(out, args.data_dir, args.seconds, auto, None if procs else 2, args.preset,
                                    args.latent), e, procs))
            extra[layout] = time.perf_counter() - start - args.seconds  # start-up, data loading, the last checkpoint
            rate[layout] = its(out)
        ratios.append(rate["2x1"] / rate["1x2"])
        rows.append(f"| {k + 1} | {rate['1x2']:.2f} | {rate['2x1']:.2f} | {ratios[-1]:.3f} | {extra['1x2']:.1f} | "
                    f"{extra['2x1']:.1f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median(ratios)
    body = "\n".join([
        *dated_machine(),
        f"- Command: `{command(argv)}` (each run trains the `{args.preset}` preset for {args.seconds:.0f} s, batch "
        f"{PAIR_PRESETS[args.preset]} in total, precision {'bf16' if auto == 'bf16' else 'float32'} (auto); it/s is the median of 5-step windows after the "
        f"first; the layout that goes first alternates; `outside training` is each command's wall time minus the "
        f"budget: start-up, data loading, the final checkpoint; 1-min load average {load_before:.1f} before)",
        "",
        "| pair | 1 process x 2 threads (it/s) | 2 processes x 1 thread (it/s) | 2x1 / 1x2 | outside training, 1x2 (s) "
        "| outside training, 2x1 (s) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"- Median paired ratio 2x1 / 1x2: **{med:.3f}** (range {min(ratios):.3f} to {max(ratios):.3f}; > 1: the "
        f"two data-parallel processes train faster)",
    ])
    print(body)
    if args.write:  # the mnist preset's section keeps its heading; another preset's gets its own
        write_section(on_this_cpu(PAIRS_HEADING if args.preset == "mnist" else f"{PAIRS_HEADING}, {args.preset}"), body)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="the MNIST IDX files (mnist, mnist-ae, mnist-ldm) or the image folder (folder32)")
    ap.add_argument("--preset", default="mnist", choices=tuple(PAIR_PRESETS), help="with --pairs: the preset trained")
    ap.add_argument("--latent", metavar="AE_RUN", help="the autoencoder run the mnist-ldm preset trains on")
    ap.add_argument("--seconds", type=float, default=45.0, help="training budget of each job")
    ap.add_argument("--pairs", type=int, default=0, help="only 1x2 against 2x1 threads, alternated this many times")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    if args.preset != "digits" and not args.data_dir:
        ap.error(f"the {args.preset} preset needs --data-dir")
    if args.preset != "mnist" and not args.pairs:
        ap.error("only --pairs trains another preset than mnist")
    if (args.preset == "mnist-ldm") != bool(args.latent):
        ap.error("--latent AE_RUN goes with --preset mnist-ldm, which needs it")
    if args.pairs:
        return pairs(args, argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    # The rows without PASSIVE run with OpenMP's own default (unset: spin a while, then sleep), what a user gets. Until
    # 2026-12-06 they set ACTIVE (spin for ever), under which a thread a job stops using still spins: the tables of
    # that date and before measured ACTIVE.
    active, passive = base, {**base, "OMP_WAIT_POLICY": "PASSIVE"}
    rows: list[list[str]] = []
    n = 0

    def job(name: str) -> Path:
        nonlocal n
        n += 1
        return tmp / f"{n:02d}-{name}"

    def one(label: str, precision: str, threads: int | None, env: dict[str, str], procs: int = 0) -> None:
        out = job(label)
        e = {**env, "OMP_NUM_THREADS": "1"} if procs else env
        err = finish(launch(train_cmd(out, args.data_dir, args.seconds, precision, None if procs else threads), e,
                            procs))
        r = its(out)
        rows.append([label, precision, "1" if not procs else str(procs), str(threads), f"{r:.2f}", f"{r:.2f}",
                     "yes" if "warning: other processes" in err else "no"])
        print(rows[-1], file=sys.stderr, flush=True)

    def two(label: str, precision: str, threads: int | None, env: dict[str, str], stagger: float = 0.0) -> None:
        a, b = job(label + "-a"), job(label + "-b")
        pa = launch(train_cmd(a, args.data_dir, args.seconds, precision, threads), env)
        time.sleep(stagger)
        pb = launch(train_cmd(b, args.data_dir, args.seconds, precision, threads), env)
        errs = [finish(pa), finish(pb)]
        ra, rb = its(a), its(b)
        rows.append([label, precision, "2 jobs", "default" if threads is None else str(threads),
                     f"{ra:.2f} + {rb:.2f}", f"{ra + rb:.2f}",
                     ", ".join("yes" if "warning: other processes" in e else "no" for e in errs)])
        print(rows[-1], file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    # float32 and (with native bf16) bf16 alone; everything else in what `--mixed-precision auto` picks on this CPU.
    # Without native bf16 it is emulated, 14x slower (BENCHMARKS.md, "UNet vs diffusers", AVX2): not worth a row.
    auto = "bf16" if cpu_bf16_flags() else "no"
    one("alone, 2 threads", "no", 2, active)
    if auto == "bf16":
        one("alone, 2 threads", "bf16", 2, active)
    one("alone, 2 threads, PASSIVE", auto, 2, passive)
    one("alone, 1 thread", auto, 1, active)
    one("data-parallel, 2 processes x 1 thread", auto, 1, active, procs=2)
    two("two jobs, 2 threads each", auto, 2, active, stagger=15)
    two("two jobs, 2 threads each, PASSIVE", auto, 2, passive, stagger=15)
    two("two jobs, 1 thread each", auto, 1, active, stagger=15)
    two("two jobs, default --threads", auto, None, active, stagger=15)
    two("two jobs, default --threads, PASSIVE", auto, None, passive, stagger=15)
    shutil.rmtree(tmp, ignore_errors=True)

    head = ["configuration", "precision", "processes", "threads", "it/s (each job)", "it/s (total)", "warned"]
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if args.write:
        body = "\n".join([
            *dated_machine(),
            f"- Command: `{command(argv)}` (each job trains the `mnist` preset for {args.seconds:.0f} s, batch 64; it/s is the "
            f"median of 5-step windows after the first; 1-min load average {load_before:.1f} before)",
            "- Two jobs: the second starts 15 s after the first, the way a user starts a second run; `warned` says "
            "whether each job printed the shared-CPU warning.",
            "",
            table,
        ])
        write_section(on_this_cpu(HEADING), body)


if __name__ == "__main__":
    main()
