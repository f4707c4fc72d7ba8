"""DiT against the UNet on MNIST (issue 16): FID against training wall time and parameter count, in pixel space and
in the latent space of an autoencoder, each pair trained for the same minutes one after the other on one machine.

    python benchmarks/bench_dit.py report --pairs UNET_RUN DIT_RUN [UNET_RUN DIT_RUN ...] --data-dir DIR [--write]

Every checkpoint of each run is scored as in bench_ldm.py (n samples of the EMA weights, the same sampler, steps and
seed, the domain extractor; cached in RUN/eval/ldm/); sampling speed is DDIM at 10 NFE, batch 100, median of 3.
The plot goes to docs/dit_vs_unet.png; --write replaces the section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ldm import curve, sampling_speed  # noqa: E402
from report import machine, publish  # noqa: E402

HEADING = "## DiT against the UNet (MNIST, pixel and latent)"


def describe(run_dir: Path) -> dict:
    """Network, parameter count, latent or pixel, and the steps per second the run logged."""
    from diffusionlab.models import count_parameters
    from diffusionlab.runs import load_run

    run = load_run(run_dir)
    m = run.config.model
    name = m.get("network", "unet")
    size = (f"p{m['patch_size']} d{m['depth']} w{m['width']}" if name == "dit" else
            f"base {m['base_channels']} x {m['channel_mult']}")
    return {"run": run_dir.name, "network": name, "size": size, "params": count_parameters(run.net),
            "space": run.codec.kind, "shape": "x".join(map(str, run.model_shape))}


def plot(curves: list[tuple[dict, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for d, rows in curves:
        rows = sorted(rows, key=lambda r: r["step"])
        style = "o-" if d["network"] == "unet" else "s--"
        ax.plot([r["train_seconds"] / 60 for r in rows], [r["fid"] for r in rows], style,
                label=f"{d['network'].upper()} {d['space']} ({d['params'] / 1e6:.2f}M)")
    ax.axhline(curves[0][1][0]["floor"], color="grey", ls=":", lw=0.8, label="real-data floor")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("FID (domain extractor)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args: argparse.Namespace) -> None:
    runs = [Path(r) for r in args.pairs]
    curves = [(describe(r), curve(r, args.data_dir, args.n, args.sampler, args.steps, args.sigma_spacing, args.seed))
              for r in runs]
    speeds = {r.name: sampling_speed(r, 10) for r in runs}
    plot(curves, Path(__file__).resolve().parents[1] / "docs" / "dit_vs_unet.png")
    first = curves[0][1][0]
    lines = [f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. Written by `python benchmarks/bench_dit.py "
             f"report --pairs {' '.join(args.pairs)} --n {args.n} --write`; one job at a time.", "",
             f"Every score: {args.n} samples of the EMA weights at a checkpoint, {args.sampler} with {args.steps} steps "
             f"(`--sigma-spacing {args.sigma_spacing}`), seed {args.seed}, the domain extractor ({first['extractor']}); "
             f"real-data floor FID {first['floor']:.2f}. Training time is the wall time the loop recorded at the "
             "checkpoint (for latents, plus the one-time encoding of the training set).", "",
             "| run | network | size | params | space | steps/s | final step | minutes | final FID | best FID | "
             "sampling ms/image (10 NFE) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d, rows in curves:
        rows = sorted(rows, key=lambda r: r["step"])
        last = rows[-1]
        rate = last["step"] / last["train_seconds"]
        lines.append(f"| {d['run']} | {d['network']} | {d['size']} | {d['params'] / 1e6:.2f}M | {d['space']} "
                     f"{d['shape']} | {rate:.2f} | {last['step']} | {last['train_seconds'] / 60:.1f} | "
                     f"{last['fid']:.2f} | {min(r['fid'] for r in rows):.2f} | "
                     f"{speeds[d['run']]['seconds_per_image'] * 1e3:.2f} |")
    lines += ["", "FID at each checkpoint:", "", "| run | step | minutes | FID |", "|---|---|---|---|"]
    for d, rows in curves:
        lines += [f"| {d['run']} | {r['step']} | {r['train_seconds'] / 60:.1f} | {r['fid']:.2f} |"
                  for r in sorted(rows, key=lambda r: r["step"])]
    lines += ["", "![FID against training time, DiT and UNet](docs/dit_vs_unet.png)"]
    publish(HEADING, "\n".join(lines), args.write)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    r.add_argument("--pairs", nargs="+", required=True, help="runs, UNet then DiT for each space")
    r.add_argument("--data-dir")
    r.add_argument("--n", type=int, default=500)
    r.add_argument("--sampler", default="dpmpp2m-sde")
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--sigma-spacing", default="time")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--write", action="store_true")
    report(p.parse_args())


if __name__ == "__main__":
    main()
