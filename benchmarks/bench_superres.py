"""Super-resolution and cascades on MNIST (issue 16): upsamplers against bicubic interpolation, and a cascade (14x14
base + x2 upsampler) against a single 28x28 model at an equal total training budget.

    python benchmarks/bench_superres.py report --sr RUN [RUN ...] --base BASE --up UP --single SINGLE \\
        --data-dir DIR [--n 1000] [--levels 0 0.1 0.2] [--write]

- Restoration: the first n test images, degraded as in training, restored by each upsampler (one sample each, EMA
  weights, --up-sampler/--up-steps, augmentation level 0) and by bicubic interpolation: PSNR, SSIM and the domain FID
  beside the real-data floor (evaluation/superres.py).
- Cascade: n base samples (--sampler/--steps), each upsampled once at every --levels value, scored by FID at 28x28;
  the single model's n samples with the same sampler and steps. Training time is each run's recorded wall time.
Every score is cached in RUN/eval/superres/; --write replaces the section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cached, machine, publish  # noqa: E402

HEADING = "## Super-resolution and cascades (MNIST)"


def _splits(run, data_dir: str | None):
    import dataclasses

    from diffusionlab.evaluation.evaluate import build_extractor, load_split

    data = dataclasses.replace(run.config.data, data_dir=data_dir or run.config.data.data_dir)
    train, test = load_split(data, "train"), load_split(data, "test")
    return train, test, build_extractor("domain", train, test, progress=True)


def train_minutes(run_dir: Path) -> dict:
    """Recorded training wall time (and steps, parameters) at the run's newest checkpoint."""
    from diffusionlab.models import count_parameters
    from diffusionlab.runs import load_run
    from diffusionlab.training.checkpoint import load_checkpoint

    run = load_run(run_dir)
    state = load_checkpoint(run.checkpoint, with_optimizer=False).state
    return {"run": run_dir.name, "step": state["step"], "params": count_parameters(run.net),
            "minutes": (state["elapsed_seconds"] + state.get("codec_encode_seconds", 0.0)) / 60,
            "space": run.codec.kind, "side": run.image_shape[-1]}


def restoration(run_dir: Path, args: argparse.Namespace) -> dict:
    """PSNR/SSIM/FID of the upsampler and of bicubic on the first n test images (cached)."""
    path = run_dir / "eval" / "superres" / f"restore-{args.up_sampler}-{args.up_steps}-n{args.n}-s{args.seed}.json"

    def compute() -> dict:
        from diffusionlab.evaluation.superres import superres_report
        from diffusionlab.runs import load_run

        run = load_run(run_dir)
        train, test, extractor = _splits(run, args.data_dir)
        r = superres_report(run, train, test, extractor, n=args.n, sampler=args.up_sampler, steps=args.up_steps,
                            seed=args.seed, progress=True)
        return {**r, **train_minutes(run_dir)}

    row = cached(path, compute)
    print(f"{run_dir.name}: model PSNR {row['model']['psnr_mean']:.2f} SSIM {row['model']['ssim_mean']:.3f} "
          f"FID {row['model']['quality']['fid']:.2f}; bicubic PSNR {row['bicubic']['psnr_mean']:.2f} "
          f"FID {row['bicubic']['quality']['fid']:.2f}", flush=True)
    return row


def base_samples(base_dir: Path, args: argparse.Namespace) -> tuple[torch.Tensor, dict]:
    """n base samples (cached as an .npz) and their FID at the base's own resolution."""
    import numpy as np

    from diffusionlab.data import from_model_range
    from diffusionlab.evaluation.evaluate import quality_with_floor
    from diffusionlab.runs import load_run
    from diffusionlab.sampling import generate

    key = f"{args.sampler}-{args.steps}-n{args.n}-s{args.seed}"
    npz, meta = base_dir / "eval" / "superres" / f"base-{key}.npz", base_dir / "eval" / "superres" / f"base-{key}.json"
    if not npz.exists():
        run = load_run(base_dir)
        t0 = time.perf_counter()
        res = generate(run.denoiser, run.process, run.model_shape, args.n, args.sampler, args.steps, seed=args.seed,
                       codec=run.codec, progress=True)
        seconds = time.perf_counter() - t0
        images = from_model_range(res.images)
        train, test, extractor = _splits(run, args.data_dir)
        q = quality_with_floor(images, train, test, extractor, seed=args.seed)
        npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez(npz, images=images.numpy())
        meta.write_text(json.dumps({"fid": q["fid"], "floor": q["floor"]["fid"], "nfe": res.nfe,
                                    "seconds_per_image": seconds / args.n, **train_minutes(base_dir)}, indent=1))
    return torch.from_numpy(np.load(npz)["images"]), json.loads(meta.read_text())


def cascade(base_dir: Path, up_dir: Path, level: float, args: argparse.Namespace) -> dict:
    """FID at 28x28 of the base samples upsampled once at augmentation `level` (cached)."""
    path = up_dir / "eval" / "superres" / (f"cascade-{base_dir.name}-{args.sampler}-{args.steps}-{args.up_sampler}-"
                                           f"{args.up_steps}-l{level:g}-n{args.n}-s{args.seed}.json")
    lowres, base = base_samples(base_dir, args)

    def compute() -> dict:
        from diffusionlab.data import from_model_range, to_model_range
        from diffusionlab.evaluation.evaluate import quality_with_floor
        from diffusionlab.runs import load_run
        from diffusionlab.superres import upsample

        up = load_run(up_dir)
        train, test, extractor = _splits(up, args.data_dir)
        t0 = time.perf_counter()
        res = upsample(up.denoiser, up.process, up.model_shape, to_model_range(lowres), args.up_sampler, args.up_steps,
                       level=level, seed=args.seed + 1, codec=up.codec, progress=True)
        seconds = time.perf_counter() - t0
        q = quality_with_floor(from_model_range(res.images), train, test, extractor, seed=args.seed)
        return {"level": level, "fid": q["fid"], "kid": q["kid_mean"], "precision": q["precision"],
                "recall": q["recall"], "floor": q["floor"]["fid"], "extractor": q["extractor"],
                "up_seconds_per_image": seconds / args.n, "up_nfe": res.nfe, "base": base,
                "up": train_minutes(up_dir)}

    row = cached(path, compute)
    print(f"cascade {base_dir.name} -> {up_dir.name} at level {level:g}: FID {row['fid']:.2f}", flush=True)
    return row


def single(run_dir: Path, args: argparse.Namespace) -> dict:
    """FID of the single model's n samples with the base's sampler and steps (cached)."""
    path = run_dir / "eval" / "superres" / f"single-{args.sampler}-{args.steps}-n{args.n}-s{args.seed}.json"

    def compute() -> dict:
        from diffusionlab.data import from_model_range
        from diffusionlab.evaluation.evaluate import quality_with_floor
        from diffusionlab.runs import load_run
        from diffusionlab.sampling import generate

        run = load_run(run_dir)
        train, test, extractor = _splits(run, args.data_dir)
        t0 = time.perf_counter()
        res = generate(run.denoiser, run.process, run.model_shape, args.n, args.sampler, args.steps, seed=args.seed,
                       codec=run.codec, progress=True)
        seconds = time.perf_counter() - t0
        q = quality_with_floor(from_model_range(res.images), train, test, extractor, seed=args.seed)
        return {"fid": q["fid"], "kid": q["kid_mean"], "precision": q["precision"], "recall": q["recall"],
                "floor": q["floor"]["fid"], "nfe": res.nfe, "seconds_per_image": seconds / args.n,
                **train_minutes(run_dir)}

    row = cached(path, compute)
    print(f"single {run_dir.name}: FID {row['fid']:.2f}", flush=True)
    return row


def figure(runs: list[Path], args: argparse.Namespace, k: int = 10) -> Path:
    """docs/superres_mnist.png: for each upsampler, rows of k test digits -- bicubic from the low-resolution image,
    the model's sample, the original."""
    import dataclasses

    from diffusionlab.data import from_model_range, to_model_range
    from diffusionlab.evaluation.evaluate import load_split
    from diffusionlab.runs import load_run
    from diffusionlab.superres import bicubic_upsample, degrade, upsample
    from diffusionlab.viz import save_grid

    rows = []
    for run_dir in runs:
        run = load_run(run_dir)
        data = dataclasses.replace(run.config.data, data_dir=args.data_dir or run.config.data.data_dir)
        images = load_split(data, "test").images[:k]
        lowres = degrade(to_model_range(images), run.superres.factor)
        res = upsample(run.denoiser, run.process, run.model_shape, lowres, args.up_sampler, args.up_steps,
                       seed=args.seed, codec=run.codec)
        rows += [from_model_range(bicubic_upsample(lowres, run.superres.factor)), from_model_range(res.images), images]
    path = Path(__file__).resolve().parents[1] / "docs" / "superres_mnist.png"
    return save_grid(torch.cat(rows), path, nrow=k)


def report(args: argparse.Namespace) -> None:
    restored = [restoration(r, args) for r in args.sr]
    figure(args.sr, args)
    cascades = [cascade(args.base, args.up, level, args) for level in args.levels]
    one = single(args.single, args)
    q0 = restored[0]["model"]["quality"]
    lines = [f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. Written by `python benchmarks/bench_superres.py "
             f"report --sr {' '.join(str(r) for r in args.sr)} --base {args.base} --up {args.up} --single "
             f"{args.single} --n {args.n} --write`; one job at a time.", "",
             f"Domain extractor {q0['extractor']}; real-data floor (train against test, {args.n} images) FID "
             f"{q0['floor']['fid']:.2f}. EMA weights; seed {args.seed}.", "",
             "### Upsamplers against bicubic interpolation (MNIST test split)", "",
             f"The first {args.n} test images, degraded as in training (anti-aliased bicubic, no blur), restored by one "
             f"sample of the upsampler ({args.up_sampler}, {args.up_steps} steps, augmentation level 0) and by bicubic "
             "interpolation. PSNR on 8-bit pixels; SSIM by pytorch-msssim (window 11).", "",
             f"![bicubic, model, original; for {', '.join(r.name for r in args.sr)} in turn](docs/superres_mnist.png)", "",
             "| upsampler | space | training | params | method | PSNR (dB) | SSIM | FID | precision | recall | ms/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in restored:
        side = r["side"]
        low = side // r["factor"]
        for name in ("model", "bicubic"):
            f, q = r[name], r[name]["quality"]
            ms = f"{r['seconds_per_image'] * 1e3:.1f}" if name == "model" else "-"
            label = f"{r['run']} (x{r['factor']}, {low}x{low} -> {side}x{side})" if name == "model" else ""
            train = f"{r['minutes']:.1f} min, {r['step']} steps" if name == "model" else ""
            params = f"{r['params'] / 1e6:.2f}M" if name == "model" else ""
            lines.append(f"| {label} | {r['space'] if name == 'model' else ''} | {train} | {params} | {name} | "
                         f"{f['psnr_mean']:.2f} | {f['ssim_mean']:.3f} | {q['fid']:.2f} | {q['precision']:.3f} | "
                         f"{q['recall']:.3f} | {ms} |")
    b = cascades[0]["base"]
    u = cascades[0]["up"]
    total = b["minutes"] + u["minutes"]
    lines += ["", f"### A cascade against a single {u['side']}x{u['side']} model at an equal training budget", "",
              f"Cascade: {b['run']} ({b['step']} steps, {b['minutes']:.1f} min, FID {b['fid']:.2f} against the test split "
              f"at its {b['side']}x{b['side']}) then {u['run']} ({u['step']} steps, {u['minutes']:.1f} min): {total:.1f} min in all. "
              f"Single: {one['run']} ({one['step']} steps, {one['minutes']:.1f} min). Base and single: {args.sampler} "
              f"{args.steps} steps; upsampler: {args.up_sampler} {args.up_steps} steps; {args.n} samples each.", "",
              f"| model | training | FID ({u['side']}x{u['side']}) | precision | recall | sampling ms/image |", "|---|---|---|---|---|---|",
              f"| single {one['side']}x{one['side']} ({one['run']}) | {one['minutes']:.1f} min | {one['fid']:.2f} | {one['precision']:.3f} | "
              f"{one['recall']:.3f} | {one['seconds_per_image'] * 1e3:.1f} |"]
    for c in cascades:
        ms = (c["base"]["seconds_per_image"] + c["up_seconds_per_image"]) * 1e3
        lines.append(f"| cascade, aug level {c['level']:g} | {total:.1f} min | {c['fid']:.2f} | {c['precision']:.3f} | "
                     f"{c['recall']:.3f} | {ms:.1f} |")
    publish(HEADING, "\n".join(lines), args.write)
    out = args.up / "eval" / "superres" / "report.json"
    out.write_text(json.dumps({"restored": restored, "cascades": cascades, "single": one}, indent=1, default=float))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    r.add_argument("--sr", type=Path, nargs="+", required=True, help="upsampler runs for the restoration table")
    r.add_argument("--base", type=Path, required=True)
    r.add_argument("--up", type=Path, required=True)
    r.add_argument("--single", type=Path, required=True)
    r.add_argument("--data-dir")
    r.add_argument("--n", type=int, default=1000)
    r.add_argument("--sampler", default="ddim")
    r.add_argument("--steps", type=int, default=50)
    r.add_argument("--up-sampler", default="ddim")
    r.add_argument("--up-steps", type=int, default=25)
    r.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--write", action="store_true")
    args = p.parse_args()
    report(args)


if __name__ == "__main__":
    main()
