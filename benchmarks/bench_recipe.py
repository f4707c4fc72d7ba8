"""The mnist recipe at an equal wall-clock budget: candidate changes to the preset, each a paired run (same seed, same
data order, same budget, trained one after the other on one machine), scored the same way.

    python benchmarks/bench_recipe.py train --root ROOT --minutes 20 --data-dir DIR [--rows preset-fp32 preset-bf16 ...]
    python benchmarks/bench_recipe.py report --root ROOT --data-dir DIR [--n 2000] [--write]
    python benchmarks/bench_recipe.py report --root ROOT --data-dir DIR --at-step 3000 [--rows ...] [--write]
    python benchmarks/bench_recipe.py posthoc --root ROOT --data-dir DIR [--row posthoc] [--sigma-rel 0.05,0.1,...]

A row is the `mnist` preset plus command-line flags (ROWS). Scores (EMA weights, seed 0, cached in RUN/eval/): FID,
KID, precision and recall (k = 3) of n samples against the MNIST test split with the domain extractor, for the
preset's sampler (DDIM, 50 steps) and for DPM-Solver++(2M) at 10 steps, beside the real-data floor; the training
steps it fitted in the budget and its median it/s. With `--at-step N`, each row that kept a checkpoint at step N is
scored there instead: an equal step count, which a machine that runs faster or slower from hour to hour cannot move
(the time to reach it is printed beside it). `posthoc` rebuilds a row's EMA at each sigma_rel from its snapshots
(EDM2's post-hoc EMA, `diffusionlab posthoc-ema`) and scores each length the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cli, machine, publish, score_row, train_each  # noqa: E402

HEADING = "## The mnist recipe at an equal budget (issue 18)"
AT_STEP_HEADING = "## The mnist recipe at an equal step count ({at} steps, issue 18)"
# Every row was measured on the preset's 32 base channels; issue 18 moved the preset to 16 (the row base16), so the
# rows pin 32 to reproduce (a row's own --base-channels comes later on the command line and wins).
PINNED = ["--base-channels", "32"]
ROWS: dict[str, tuple[list[str], str]] = {
    # --procs 1: one process, as before `--procs auto` chose 2 for this preset in float32 without native bf16
    "preset-fp32": (["--mixed-precision", "no", "--weighting", "none", "--procs", "1"],
                    "the preset before issue 18 (float32)"),
    "preset": (["--procs", "1"], "the 32-channel preset, one process (precision auto, Min-SNR-5)"),
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
    "posthoc": (["--mixed-precision", "bf16", "--weighting", "min_snr", "--posthoc-ema", "0.05,0.1,0.2",
                 "--posthoc-ema-every", "250"], "bf16 + Min-SNR-5, post-hoc EMA snapshots (sigma_rel 0.05, 0.1, 0.2)"),
}
ROWS["cosine"] = (["--mixed-precision", "bf16", "--weighting", "min_snr", "--lr-schedule", "cosine"],
                  "bf16 + Min-SNR-5 + cosine decay of the lr over the 20 minutes")
ROWS["batch32"] = (["--batch-size", "32", "--procs", "1"], "the 32-channel preset at batch 32 (twice the steps, same lr)")
# Width against depth (benchmarks/bench_widths.py gives each network's cost per step): a narrower network sees more
# images in the budget; at 24 channels with two blocks per level a step costs about what the 32-channel one's does.
ROWS["base24"] = (["--base-channels", "24", "--procs", "1"], "24 base channels (a step costs 0.65x the 32-channel one)")
ROWS["base24-blocks2"] = (["--base-channels", "24", "--num-res-blocks", "2", "--procs", "1"],
                          "24 base channels, 2 blocks per level (narrower, deeper)")
# 2 data-parallel processes x 1 thread: what `--procs auto` picks for this preset on a CPU without native bf16.
ROWS["procs2"] = (["--procs", "2"],
                  "the 32-channel preset in 2 processes x 1 thread (auto's choice without native bf16)")
# The two levers together, and a narrower network still (16 base channels: a step costs 0.35-0.36x the 32-channel
# one's).
ROWS["base24-procs2"] = (["--base-channels", "24", "--procs", "2"], "24 base channels in 2 processes x 1 thread")
ROWS["base16-procs2"] = (["--base-channels", "16", "--procs", "2"], "16 base channels in 2 processes x 1 thread")
ROWS["base16-seed1"] = (["--base-channels", "16", "--procs", "2", "--seed", "1"],
                        "16 base channels in 2 processes x 1 thread, training seed 1")
# A narrower network may want a larger step (Adam's best learning rate grows as the width shrinks).
ROWS["base16-lr2e-3"] = (["--base-channels", "16", "--lr", "2e-3", "--procs", "2"],
                         "16 base channels, lr 2e-3, in 2 processes x 1 thread")
# Narrower still: 12 base channels (12, 24, 24 per level; the 4 attention heads divide 24, and GroupNorm takes the
# largest group count <= 32 that divides a width).
ROWS["base12-procs2"] = (["--base-channels", "12", "--procs", "2"], "12 base channels in 2 processes x 1 thread")
# The attention resolution at the best width so far (the preset attends at 7x7 only): none, or 14x14 and 7x7 (at 32
# channels a step costs 0.93-1.02x and 1.29-1.46x the 7x7 one, bench_widths; at 16, 0.90x and 1.7x in these rows).
ROWS["base16-noattn-procs2"] = (["--base-channels", "16", "--attention-resolutions", "", "--procs", "2"],
                                "16 base channels, no attention, in 2 processes x 1 thread")
ROWS["base16-attn14-procs2"] = (["--base-channels", "16", "--attention-resolutions", "14,7", "--procs", "2"],
                                "16 base channels, attention at 14 and 7, in 2 processes x 1 thread")
# The narrow networks on a CPU with native bf16, where `--procs auto` trains in one process with 2 threads.
ROWS["base16"] = (["--base-channels", "16", "--procs", "1"], "16 base channels, one process (the preset since issue 18)")
ROWS["base16-procs1-seed1"] = (["--base-channels", "16", "--procs", "1", "--seed", "1"],
                              "16 base channels, one process, training seed 1")
# The preset as it trains since the size-chosen attention kernel and fused AdamW (issue 18, ninth session): the same
# flags as base16-procs2, which ran on the code before them.
ROWS["base16-procs2-v2"] = (["--base-channels", "16", "--procs", "2"],
                            "16 base channels in 2 processes x 1 thread, explicit attention at 7x7 and fused AdamW")
ROWS["base16-procs2-v2-seed1"] = (["--base-channels", "16", "--procs", "2", "--seed", "1"],
                                  "the same, training seed 1")
POSTHOC_HEADING = "## Post-hoc EMA: the averaging length at an equal budget (issue 18)"
SAMPLERS = "ddim:50,dpmpp2m:10"  # NAME:STEPS, the preset's sampler first


def train(args: argparse.Namespace) -> None:
    """Train each row for --minutes, one after the other (never two at once)."""
    train_each(Path(args.root), args.rows,
               lambda name: ["--preset", "mnist", "--data-dir", args.data_dir, *PINNED, *ROWS[name][0]], args.minutes)


def summary(run: Path) -> dict:
    """Steps, minutes and median it/s of a finished run (from metrics.jsonl)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"steps": rows[-1]["step"], "minutes": rows[-1]["elapsed_s"] / 60,
            "it_per_s": statistics.median(r["it_per_s"] for r in rows[1:]),
            "precision": json.loads((run / "config.json").read_text())["train"]["mixed_precision"]}


def minutes_to(run: Path, step: int) -> float:
    """Wall-clock minutes the run took to reach `step` (from the metrics.jsonl row logged at it)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return next(r["elapsed_s"] for r in rows if r["step"] >= step) / 60


def report(args: argparse.Namespace) -> None:
    """Score every trained row (at its end, or with --at-step at that checkpoint); print and with --write publish."""
    from diffusionlab.training.checkpoint import list_checkpoints

    root = Path(args.root)
    samplers = [(s.split(":")[0], int(s.split(":")[1])) for s in args.samplers.split(",")]
    names = [n for n in args.rows if (root / n / "config.json").exists()]
    at = args.at_step
    if at:  # only the rows that kept this step's checkpoint (a run keeps its newest three)
        names = [n for n in names if at in dict(list_checkpoints(root / n))]
    lines = ["| row | what | precision | steps | " + ("minutes to reach it" if at else "it/s") + " | " + " | ".join(
        f"FID {s} {k}" for s, k in samplers) + " | precision / recall (" + samplers[0][0] + ") |",
        "|" + "---|" * (6 + len(samplers))]
    floor = None
    for name in names:
        run = root / name
        info = summary(run)
        where = {"checkpoint": dict(list_checkpoints(run))[at], "tag": f"-step{at}"} if at else {}
        scores = [score_row(run, s, k, 0.0, args.n, None, **where)["quality"] for s, k in samplers]
        floor = scores[0]["floor"]["fid"]
        pace = f"{minutes_to(run, at):.1f}" if at else f"{info['it_per_s']:.2f}"
        lines.append(f"| {name} | {ROWS[name][1]} | {info['precision']} | {at or info['steps']} | {pace} | "
                     + " | ".join(f"{s['fid']:.2f}" for s in scores)
                     + f" | {scores[0]['precision']:.3f} / {scores[0]['recall']:.3f} |")
    cmd = (f"`python benchmarks/bench_recipe.py train --root ROOT --minutes {args.minutes:g} --data-dir DIR --rows "
           f"{' '.join(names)}`, then `report ...{f' --at-step {at}' if at else ''} --n {args.n} --write`")
    what = f"at its checkpoint of step {at} (each row trained for {args.minutes:g} minutes and kept it) " if at else ""
    body = "\n".join([
        f"- Machine: {machine()}; CPU flags: {' '.join(_flags())}",
        f"- Command: {cmd}",
        f"- Each row: `diffusionlab train --preset mnist --minutes {args.minutes:g} {' '.join(PINNED)}` plus its flags, "
        f"seed 0 unless it says otherwise, trained alone one after the other; scored {what}with `evaluate --fid` on "
        f"{args.n} samples (EMA weights, seed 0, domain extractor, k = 3)"
        + (f"; real-data floor FID {floor:.2f}" if floor is not None else ""),
        "",
        *lines,
    ])
    publish(args.heading or (AT_STEP_HEADING.format(at=at) if at else HEADING), body, args.write)


def posthoc(args: argparse.Namespace) -> None:
    """Rebuild each --sigma-rel of a row trained with post-hoc EMA snapshots, score each (and the run's own EMA) with
    every sampler, and print (with --write, publish) the table."""
    run = Path(args.root) / args.row
    samplers = [(s.split(":")[0], int(s.split(":")[1])) for s in args.samplers.split(",")]
    cli("posthoc-ema", str(run), "--sigma-rel", ",".join(f"{x:g}" for x in args.sigma_rel))
    step = summary(run)["steps"]
    from diffusionlab.training.posthoc_ema import output_dir

    cands = [("the run's EMA (decay 0.999)", None, "")] + [
        (f"post-hoc sigma_rel {x:g}", output_dir(run, x, step), f"-posthoc{x:g}") for x in args.sigma_rel]
    lines = ["| weights | fit error | " + " | ".join(f"FID {s} {k}" for s, k in samplers)
             + f" | precision / recall ({samplers[0][0]}) |", "|" + "---|" * (3 + len(samplers))]
    floor = None
    for label, folder, tag in cands:
        scores = [score_row(run, s, k, 0.0, args.n, None, checkpoint=folder, tag=tag)["quality"] for s, k in samplers]
        floor = scores[0]["floor"]["fid"]
        fit = "-" if folder is None else \
            f"{100 * json.loads((folder / 'state.json').read_text())['posthoc_ema']['fit_error']:.2f}%"
        lines.append(f"| {label} | {fit} | " + " | ".join(f"{q['fid']:.2f}" for q in scores)
                     + f" | {scores[0]['precision']:.3f} / {scores[0]['recall']:.3f} |")
    info = summary(run)
    body = "\n".join([
        f"- Machine: {machine()}; CPU flags: {' '.join(_flags())}",
        f"- Command: `python benchmarks/bench_recipe.py train --root ROOT --minutes {args.minutes:g} --data-dir DIR "
        f"--rows {args.row}`, then `posthoc --root ROOT --data-dir DIR --row {args.row} --sigma-rel "
        f"{','.join(f'{x:g}' for x in args.sigma_rel)} --n {args.n} --write`",
        f"- The row `{args.row}` ({ROWS[args.row][1]}): {info['steps']} steps in {info['minutes']:.1f} min "
        f"({info['it_per_s']:.2f} it/s); every candidate is the same training run's weights at its last step, "
        f"averaged differently; scored with `evaluate --fid --checkpoint` on {args.n} samples (seed 0, domain "
        "extractor, k = 3)" + (f"; real-data floor FID {floor:.2f}" if floor is not None else ""),
        "", *lines])
    publish(args.heading or POSTHOC_HEADING, body, args.write)


def _flags() -> list[str]:
    from diffusionlab.training.precision import cpu_bf16_flags

    return list(cpu_bf16_flags()) or ["no native bf16 (AVX2)"]


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "report", "posthoc"):
        s = sub.add_parser(name)
        s.add_argument("--root", required=True)
        s.add_argument("--data-dir", required=True)
        s.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
        s.add_argument("--minutes", type=float, default=20.0)
    for name in ("report", "posthoc"):
        sub.choices[name].add_argument("--n", type=int, default=2000)
        sub.choices[name].add_argument("--write", action="store_true")
        sub.choices[name].add_argument("--heading", default=None, help="the BENCHMARKS.md section to write")
        sub.choices[name].add_argument("--samplers", default=SAMPLERS, help="NAME:STEPS,... (default %(default)s)")
    sub.choices["report"].add_argument("--at-step", type=int, default=0,
                                       help="score each row's checkpoint of this step (rows without one are left out)")
    sub.choices["posthoc"].add_argument("--row", default="posthoc", choices=list(ROWS))
    sub.choices["posthoc"].add_argument("--sigma-rel", type=lambda s: [float(x) for x in s.split(",")],
                                        default=[0.05, 0.1, 0.15, 0.2, 0.25])
    args = p.parse_args()
    {"train": train, "report": report, "posthoc": posthoc}[args.cmd](args)


if __name__ == "__main__":
    main()
