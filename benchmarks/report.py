"""Shared by the benchmark scripts: describe the machine, and replace one section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() as a fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def on_this_cpu(heading: str) -> str:
    """`heading` for this CPU kind ("... on AVX2", "... on AVX512"), so each kind's generated section stands apart."""
    import torch

    return f"{heading} on {torch.backends.cpu.get_cpu_capability()}"


def machine() -> str:
    """One line: CPU, cores, torch and Python versions."""
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} cores, no GPU" if not torch.cuda.is_available() else
            f"{cpu_name()}, {os.cpu_count()} cores, GPU {torch.cuda.get_device_name()}") + \
        f"; torch {torch.__version__}, Python {platform.python_version()}"


def dated_cpu_line() -> str:
    """A section's first line: today's date, the machine and torch's CPU capability (AVX2, AVX512, ...)."""
    import datetime
    import torch

    return (f"- Date: {datetime.date.today().isoformat()}; machine: {machine()}; CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}")


def section(lines: list[str], columns: list[str], rows: list[str]) -> str:
    """A generated section's body: its `- ` lines, then a markdown table of `columns` over the finished `rows`."""
    return "\n".join([*lines, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows])


def cached(path: Path, compute) -> dict:
    """The JSON at `path`, or compute() written there (a benchmark's score, kept beside its run)."""
    import json

    if path.exists():
        return json.loads(path.read_text())
    row = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1, default=float))
    return row


def write_section(heading: str, body: str) -> None:
    """Replace (or append) the section `heading` of BENCHMARKS.md, leaving other sections untouched."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def cli(*args: str, threads: int | None = None) -> str:
    """Run `diffusionlab ARGS` in a subprocess (optionally with OMP_NUM_THREADS) and return stdout; exit on failure."""
    import subprocess
    import sys

    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.run([sys.executable, "-m", "diffusionlab.cli", *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"failed: diffusionlab {' '.join(args)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def score_row(run: Path, sampler: str, steps: int, eta: float, n: int, threads: int | None, *,
              run_missing: bool = True, checkpoint: Path | None = None, tag: str = "") -> dict | None:
    """`evaluate --fid` of one sampler setting, cached as RUN/eval/fid_nfe/KEY-nN.json (None if missing and not run).

    `sampler` may name a sigma grid as `NAME@SPACING` (e.g. `dpmpp2m@time`: `--sigma-spacing time`); `checkpoint`
    scores that checkpoint folder instead of the newest (`tag` then names it in the cache key)."""
    import json
    import time

    path = run / "eval" / "fid_nfe" / f"{sampler}-{steps}-eta{eta:g}-n{n}{tag}.json"
    if not path.exists():  # resumable: a finished setting is not recomputed
        if not run_missing:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        name, _, spacing = sampler.partition("@")
        cli("evaluate", str(run), "--fid", "--n", str(n), "--sampler", name, "--steps", str(steps),
            "--eta", str(eta), *(("--sigma-spacing", spacing) if spacing else ()), "--json", str(path),
            *(("--checkpoint", str(checkpoint)) if checkpoint is not None else ()), threads=threads)
        print(f"{run.name} {path.stem}: {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(path.read_text())


def train_each(root: Path, names: list[str], flags: Callable[[str], list[str]], minutes: float,
               steps: Callable[[str], int] | None = None) -> None:
    """`diffusionlab train --minutes M --out ROOT/NAME FLAGS(NAME)` for each name, one after the other (never two at
    once: they would share the cores), skipping runs that exist; each one's output goes to ROOT/NAME.log. With
    `steps`, each run's budget is --steps STEPS(NAME) instead (a time budget converted at a measured speed, which a
    busy machine cannot shorten)."""
    import subprocess
    import sys

    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        out = root / name
        if (out / "config.json").exists():
            print(f"{name}: exists, skipped", flush=True)
            continue
        budget = ["--steps", str(steps(name))] if steps is not None else ["--minutes", str(minutes)]
        cmd = [sys.executable, "-m", "diffusionlab.cli", "train", *budget, "--out", str(out),
               "--progress", "lines", "--sample-every", "1000000", *flags(name)]
        print(f"{name}: {' '.join(cmd[3:])}", flush=True)
        with open(root / f"{name}.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)


def publish(heading: str, body: str, write: bool) -> None:
    """Print a benchmark's section and, with --write, put it into BENCHMARKS.md."""
    print(body)
    if write:
        write_section(heading, body)
