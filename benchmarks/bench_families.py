"""Every family side by side (issue 17, docs/maths.md section 9): DDPM in pixels, the latent model, flow matching, GAN,
VAE and normalizing flow, each trained for the same wall-clock minutes one after the other on one machine, then
scored the same way.

    python benchmarks/bench_families.py train --dataset mnist --root ROOT --minutes 8 --ae AE_RUN [--data-dir DIR]
    python benchmarks/bench_families.py report --dataset mnist --root ROOT [--n 10000] [--data-dir DIR] [--write]

Scores of each run (EMA weights, seed 0, cached in RUN/eval/families/):
- FID, precision and recall (k = 3) of n samples against the test split, with the domain extractor (a CNN trained
  on the data's training split), beside the real-data floor;
- mode coverage: the class histogram of the same n samples under that classifier, its entropy (log2 10 = 3.32 for
  balanced classes), the largest and smallest class shares, and the classes with under 1/5 of their fair share;
- NLL in bits/dim on the first `--nll-n` test images where the family has one: DDPM's variational bound over all
  T = 1000 steps, flow matching's probability-flow ODE (25 RK4 steps
  in log sigma, Hutchinson), the VAE's ELBO, the flow's exact dequantized density; none for the GAN, and none in
  pixels for the latent model (its bound is over latents);
- sampling: images per second at batch 500 (median of 3 after a warm-up) and NFE; training steps, wall time and the
  sampled network's parameter count.
The diffusion rows sample with DPM-Solver++(2M), 10 steps (10 NFE; Karras sigmas), every baseline in one pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cached, machine, publish, train_each  # noqa: E402

HEADING = "## The families side by side (issue 17)"
# row name -> (preset, the family's name in the table)
ROWS = {"ddpm": ("{d}", "DDPM (pixels)"), "latent": ("{d}", "latent DDPM"), "flow": ("{d}-flow", "flow matching"),
        "gan": ("{d}-gan", "GAN (DCGAN)"), "vae": ("{d}-vae", "VAE"), "nf": ("{d}-nf", "normalizing flow (Glow)")}
SAMPLER, STEPS = "dpmpp2m", 10


def train(args: argparse.Namespace) -> None:
    """Train every row for --minutes, one after the other (never two at once: they would share the 2 cores)."""

    def flags(name: str) -> list[str]:
        out = ["--preset", ROWS[name][0].format(d=args.dataset)]
        if args.data_dir:
            out += ["--data-dir", args.data_dir]
        return out + (["--latent", args.ae] if name == "latent" else [])

    train_each(Path(args.root), args.rows, flags, args.minutes)


class Model:
    """One trained run, diffusion or baseline: draw n uint8 images, time them, score its NLL."""

    def __init__(self, run_dir: Path, data_dir: str | None):
        from diffusionlab.runs import is_baseline_run, load_run, trusted_config

        self.dir, self.data_dir = run_dir, data_dir
        self.baseline = is_baseline_run(run_dir)
        if self.baseline:
            from diffusionlab.baselines import load_baseline
            from diffusionlab.training.checkpoint import latest_checkpoint

            ckpt = latest_checkpoint(run_dir)
            self.run = load_baseline(run_dir, trusted_config(run_dir, ckpt), ckpt)
            self.net, self.nfe = self.run.net, 1
        else:
            self.run = load_run(run_dir)
            self.net, self.nfe = self.run.net, STEPS

    def sample(self, n: int, seed: int, batch: int = 500) -> torch.Tensor:
        """n images (uint8), seed `seed`."""
        if self.baseline:
            return self.run.sample(n, seed, batch_size=batch, progress=True)
        from diffusionlab.data import from_model_range
        from diffusionlab.sampling import generate

        r = self.run
        res = generate(r.denoiser, r.process, r.model_shape, n, SAMPLER, STEPS, seed=seed, codec=r.codec,
                       batch_size=batch, progress=True)
        return from_model_range(res.images)

    def speed(self, batch: int = 500, repeats: int = 3) -> float:
        """Images per second at batch `batch`: the median of `repeats` timings after one warm-up."""
        times = []
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            self.sample(batch, 1000 + r, batch)
            times.append(time.perf_counter() - t0)
        return batch / statistics.median(times[1:])

    def nll(self, n: int) -> dict | None:
        """bits/dim on the first n test images (what it is, in `what`), or None where the family has none in pixels."""
        from diffusionlab.evaluation.evaluate import nll_images, nll_report, ode_nll_report

        if self.baseline:
            if self.run.kind.nll is None:
                return None
            _, images, y = nll_images(self.run, "test", n, 0)
            return self.run.bits_per_dim(images, y, seed=0, progress=True)
        r = self.run
        if not r.codec.pixel_space:
            return None
        if r.process.T is not None:
            rep = nll_report(r, split="test", n=n, batch_size=n, seed=0, progress=True)
            return {**rep, "what": f"variational bound, all T = {r.process.T} steps"}
        rep = ode_nll_report(r, split="test", n=n, steps=25, method="rk4", divergence="hutchinson", batch_size=n,
                             seed=0, progress=True)
        return {**rep, "what": "probability-flow ODE (dequantized), 25 RK4 steps, Hutchinson"}


def coverage(logits: np.ndarray, classes: int = 10) -> dict:
    """The class histogram of samples under the domain classifier and what it says about missing modes."""
    counts = np.bincount(logits.argmax(1), minlength=classes)
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return {"counts": counts.tolist(), "entropy_bits": entropy, "max_share": float(p.max()), "min_share": float(p.min()),
            "starved": int((p < 0.2 / classes).sum()), "missing": int((counts == 0).sum())}


def score(run_dir: Path, args: argparse.Namespace) -> dict:
    """Every number of one row (cached)."""
    def compute() -> dict:
        from diffusionlab.evaluation.evaluate import build_extractor, load_split, quality_with_floor
        from diffusionlab.models import count_parameters

        m = Model(run_dir, args.data_dir)
        data = m.run.config.data
        if args.data_dir:
            import dataclasses

            data = dataclasses.replace(data, data_dir=args.data_dir)
        train_ds, test = load_split(data, "train"), load_split(data, "test")
        extractor = build_extractor("domain", train_ds, test, progress=True)
        t0 = time.perf_counter()
        fake = m.sample(args.n, 0)
        sample_seconds = time.perf_counter() - t0
        nonfinite = getattr(m.run, "nonfinite", 0)  # a baseline counts them; diffusion samples are clipped
        q = quality_with_floor(fake, train_ds, test, extractor, k=3, seed=0)
        _, logits = extractor(fake)
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return {"run": run_dir.name, "quality": q, "coverage": coverage(logits),
                "nll": m.nll(args.nll_n), "images_per_second": m.speed(), "nfe": m.nfe,
                "sample_seconds": sample_seconds, "nonfinite": nonfinite, "params": count_parameters(m.net), "steps": rows[-1]["step"],
                "train_minutes": rows[-1]["elapsed_s"] / 60, "extractor": q["extractor"]}

    return cached(run_dir / "eval" / "families" / f"n{args.n}-nll{args.nll_n}.json", compute)


def figure(root: Path, rows: dict[str, dict], path: Path) -> None:
    """Sample grids of every family, one row of 12 each, and the class histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 1.2 * len(rows)), gridspec_kw={"width_ratios": [3, 1]})
    for i, (name, r) in enumerate(rows.items()):
        images = Model(root / name, None).sample(12, 7).float().mean(1)
        axes[i, 0].imshow(torch.cat(list(images), dim=1).numpy(), cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_axis_off()
        axes[i, 0].set_title(ROWS[name][1], fontsize=8, loc="left")
        axes[i, 1].bar(range(10), np.array(r["coverage"]["counts"]) / sum(r["coverage"]["counts"]))
        axes[i, 1].axhline(0.1, color="grey", lw=0.5, ls=":")
        axes[i, 1].set_xticks(range(10))
        axes[i, 1].tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args: argparse.Namespace) -> None:
    root = Path(args.root)
    rows = {name: score(root / name, args) for name in args.rows if (root / name / "config.json").exists()}
    first = next(iter(rows.values()))
    floor = first["quality"]["floor"]
    fig = Path(__file__).resolve().parents[1] / "docs" / f"families_{args.dataset}.png"
    figure(root, rows, fig)
    lines = [f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. Written by `python benchmarks/bench_families.py "
             f"report --dataset {args.dataset} --n {args.n} --write`, after `bench_families.py train --minutes "
             f"{args.minutes}`; one job at a time.", "",
             f"Each family trained for {args.minutes:g} min of wall time on {args.dataset} with its preset. Scores: "
             f"{args.n:,} samples of the EMA weights (seed 0) against the test split; diffusion with {SAMPLER} "
             f"{STEPS} steps. Extractor: {first['extractor']}; real-data floor FID {floor['fid']:.2f}, precision "
             f"{floor['precision']:.3f}, recall {floor['recall']:.3f}. Coverage: the class histogram of the same "
             "samples under the extractor's classifier (entropy of a balanced histogram: 3.32 bits; 'missing': "
             f"classes never drawn, 'starved': classes under 2% of the samples). NLL on {args.nll_n} test images.", "",
             "| family | FID | precision | recall | NLL bits/dim | classes: entropy, min-max share, missing/starved | "
             "images/s (NFE) | steps | params |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        q, c = r["quality"], r["coverage"]
        nll = "n/a" if r["nll"] is None else f"{r['nll']['bits_per_dim']:.3f} ({_short(r['nll']['what'])})"
        bad = f"; {r['nonfinite']} not finite" if r.get("nonfinite") else ""
        lines.append(f"| {ROWS[name][1]} | {q['fid']:.2f} | {q['precision']:.3f} | {q['recall']:.3f} | {nll} | "
                     f"{c['entropy_bits']:.3f}, {c['min_share']:.1%}-{c['max_share']:.1%}, {c['missing']}/{c['starved']} | "
                     f"{r['images_per_second']:.0f} ({r['nfe']}{bad}) | {r['steps']:,} | {r['params'] / 1e6:.2f}M |")
    lines += ["", f"![samples and class histograms](docs/{fig.name})"]
    publish(HEADING.replace("(issue 17)", f"({args.dataset})"), "\n".join(lines), args.write)


def _short(what: str) -> str:
    return {"ELBO bound": "ELBO"}.get(what, "exact, dequantized" if what.startswith("exact") else
                                      "VLB" if what.startswith("variational") else
                                      "ODE" if what.startswith("probability") else what)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for cmd in ("train", "report"):
        s = sub.add_parser(cmd)
        s.add_argument("--dataset", choices=("digits", "mnist"), required=True)
        s.add_argument("--root", required=True, help="the folder of the runs, one per row")
        s.add_argument("--data-dir", default=None)
        s.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
        s.add_argument("--minutes", type=float, default=8.0)
    sub.choices["train"].add_argument("--ae", help="the autoencoder run of the latent row")
    sub.choices["report"].add_argument("--n", type=int, default=10000)
    sub.choices["report"].add_argument("--nll-n", type=int, default=64)
    sub.choices["report"].add_argument("--write", action="store_true")
    args = p.parse_args()
    {"train": train, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
