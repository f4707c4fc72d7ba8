"""The mnist recipe at an equal wall-clock budget: candidate changes to the preset, each a paired run (same seed, same
data order, same budget, trained one after the other on one machine), scored the same way.

    python benchmarks/bench_recipe.py train --root ROOT --minutes 20 --data-dir DIR [--rows preset-fp32 preset-bf16 ...]
    python benchmarks/bench_recipe.py report --root ROOT --data-dir DIR [--n 2000] [--write]

A row is the `mnist` preset plus command-line flags (ROWS). Scores (EMA weights, seed 0, cached in RUN/eval/): FID,
KID, precision and recall (k = 3) of n samples against the MNIST test split with the domain extractor, for the
preset's sampler (DDIM, 50 steps) and for DPM-Solver++(2M) at 10 steps, beside the real-data floor; the training
steps it fitted in the budget and its median it/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish, score_row, train_each  # noqa: E402

HEADING = "## The mnist recipe at an equal budget (issue 18)"
ROWS: dict[str, tuple[list[str], str]] = {
    "preset-fp32": (["--mixed-precision", "no", "--weighting", "none"], "the preset before issue 18 (float32)"),
    "preset-bf16": (["--mixed-precision", "bf16", "--weighting", "none"], "bf16 autocast (what auto picks on this CPU)"),
    "min-snr": (["--mixed-precision", "bf16", "--weighting", "min_snr"], "bf16 + Min-SNR-5 weighting"),
    "lr2e-3": (["--mixed-precision", "bf16", "--lr", "2e-3"], "bf16 + lr 2e-3"),
    "min-snr-lr2e-3": (["--mixed-precision", "bf16", "--weighting", "min_snr", "--lr", "2e-3"],
                       "bf16 + Min-SNR-5 + lr 2e-3"),
    "batch128": (["--mixed-precision", "bf16", "--batch-size", "128", "--lr", "1.5e-3"], "bf16 + batch 128, lr 1.5e-3"),
    "lognormal": (["--mixed-precision", "bf16", "--timestep-sampling", "lognormal"],
                  "bf16 + EDM's lognormal noise levels"),
    "ema9995": (["--mixed-precision", "bf16", "--ema-decay", "0.9995"], "bf16 + EMA decay 0.9995"),
    "simple-loss": (["--mixed-precision", "bf16", "--variance", "beta_tilde", "--loss", "simple"],
                    "bf16 + fixed variance, L_simple"),
}
SAMPLERS = "ddim:50,dpmpp2m:10"  # NAME:STEPS, the preset's sampler first


def train(args: argparse.Namespace) -> None:
    """Train each row for --minutes, one after the other (never two at once)."""
    train_each(Path(args.root), args.rows,
               lambda name: ["--preset", "mnist", "--data-dir", args.data_dir, *ROWS[name][0]], args.minutes)


def summary(run: Path) -> dict:
    """Steps, minutes and median it/s of a finished run (from metrics.jsonl)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"steps": rows[-1]["step"], "minutes": rows[-1]["elapsed_s"] / 60,
            "it_per_s": statistics.median(r["it_per_s"] for r in rows[1:]),
            "precision": json.loads((run / "config.json").read_text())["train"]["mixed_precision"]}


def report(args: argparse.Namespace) -> None:
    """Score every trained row; print (and with --write, publish) the table."""
    root = Path(args.root)
    samplers = [(s.split(":")[0], int(s.split(":")[1])) for s in args.samplers.split(",")]
    names = [n for n in args.rows if (root / n / "config.json").exists()]
    lines = ["| row | what | precision | steps | it/s | " + " | ".join(
        f"FID {s} {k}" for s, k in samplers) + " | precision / recall (" + samplers[0][0] + ") |",
        "|" + "---|" * (6 + len(samplers))]
    floor = None
    for name in names:
        run = root / name
        info = summary(run)
        scores = [score_row(run, s, k, 0.0, args.n, None)["quality"] for s, k in samplers]
        floor = scores[0]["floor"]["fid"]
        lines.append(f"| {name} | {ROWS[name][1]} | {info['precision']} | {info['steps']} | {info['it_per_s']:.2f} | "
                     + " | ".join(f"{s['fid']:.2f}" for s in scores)
                     + f" | {scores[0]['precision']:.3f} / {scores[0]['recall']:.3f} |")
    cmd = (f"`python benchmarks/bench_recipe.py train --root ROOT --minutes {args.minutes:g} --data-dir DIR --rows "
           f"{' '.join(names)}`, then `report ... --n {args.n} --write`")
    body = "\n".join([
        f"- Machine: {machine()}; CPU flags: {' '.join(_flags())}",
        f"- Command: {cmd}",
        f"- Each row: `diffusionlab train --preset mnist --minutes {args.minutes:g}` plus its flags, seed 0, trained "
        "alone one after the other; scored with `evaluate --fid` on "
        f"{args.n} samples (EMA weights, seed 0, domain extractor, k = 3)"
        + (f"; real-data floor FID {floor:.2f}" if floor is not None else ""),
        "",
        *lines,
    ])
    publish(args.heading, body, args.write)


def _flags() -> list[str]:
    from diffusionlab.training.precision import cpu_bf16_flags

    return list(cpu_bf16_flags()) or ["no native bf16 (AVX2)"]


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "report"):
        s = sub.add_parser(name)
        s.add_argument("--root", required=True)
        s.add_argument("--data-dir", required=True)
        s.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
        s.add_argument("--minutes", type=float, default=20.0)
    sub.choices["report"].add_argument("--n", type=int, default=2000)
    sub.choices["report"].add_argument("--write", action="store_true")
    sub.choices["report"].add_argument("--heading", default=HEADING, help="the BENCHMARKS.md section to write")
    sub.choices["report"].add_argument("--samplers", default=SAMPLERS, help="NAME:STEPS,... (default %(default)s)")
    args = p.parse_args()
    (train if args.cmd == "train" else report)(args)


if __name__ == "__main__":
    main()
