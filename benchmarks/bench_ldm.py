"""Latent diffusion at small scale (issue 13, section 3): the autoencoder, FID against training compute for a pixel
and a latent model of the same family, and sampling speed per image.

    python benchmarks/bench_ldm.py ae AE_RUN --data-dir DIR            # PSNR, rFID, latent shape, train time
    python benchmarks/bench_ldm.py curve PIXEL_RUN LATENT_RUN --data-dir DIR [--n 500]
    python benchmarks/bench_ldm.py speed PIXEL_RUN LATENT_RUN [--nfe 10 50]
    python benchmarks/bench_ldm.py report AE_RUN PIXEL_RUN LATENT_RUN --data-dir DIR [--write]

`curve` scores every checkpoint of each run (EMA weights, the domain extractor, the same sampler and seed for both)
and caches each score in RUN/eval/ldm/; `report` runs what is missing, draws docs/ldm_fid_compute.png and, with
--write, replaces the section "Latent diffusion against pixel diffusion (MNIST)" of BENCHMARKS.md.
Training compute is the wall time the loop recorded at each checkpoint (`elapsed_seconds`) plus, for the latent
model, the time it took to encode the training set once; the autoencoder's own training is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

HEADING = "## Latent diffusion against pixel diffusion (MNIST)"


def _data(run_dir: Path, data_dir: str | None):
    from diffusionlab.runs import read_config_json
    from diffusionlab.training.config import DataConfig

    d = read_config_json(run_dir)["data"]
    return DataConfig(**{**d, "data_dir": data_dir or d.get("data_dir")})


def autoencoder_report(ae_run: Path, data_dir: str | None, n: int, seed: int = 0) -> dict:
    """PSNR (8-bit) and rFID of test-split reconstructions by the EMA weights; latent shape, compression, time."""
    from safetensors.torch import load_file

    from diffusionlab.evaluation.evaluate import build_extractor, load_split
    from diffusionlab.evaluation.reconstruction import reconstruction_report
    from diffusionlab.models import count_parameters
    from diffusionlab.models.autoencoder import AutoencoderConfig, AutoencoderKL
    from diffusionlab.runs import read_autoencoder_run_config
    from diffusionlab.training.checkpoint import latest_checkpoint, load_checkpoint

    cfg = read_autoencoder_run_config(ae_run)
    ckpt = latest_checkpoint(ae_run)
    state = load_checkpoint(ckpt, with_optimizer=False).state
    mc = AutoencoderConfig.from_dict(cfg.model)
    model = AutoencoderKL(mc)
    model.load_state_dict(load_file(str(ckpt / "ema.safetensors")))
    data = _data(ae_run, data_dir)
    train, test = load_split(data, "train"), load_split(data, "test")
    r = reconstruction_report(model, train, test, build_extractor("domain", train, test, progress=True), n=n, seed=seed)
    c, h, w = mc.latent_shape
    return {"run": str(ae_run), "step": state["step"], "train_seconds": state["elapsed_seconds"],
            "params": count_parameters(model), "latent_shape": [c, h, w], "image_shape": list(mc.image_shape),
            "compression": (mc.image_shape[0] * mc.image_shape[1] * mc.image_shape[2]) / (c * h * w),
            "factor": mc.factor, "psnr_mean": r["psnr_mean"], "psnr_median": r["psnr_median"],
            "rfid": r["quality"]["fid"], "floor_fid": r["quality"]["floor"]["fid"], "extractor": r["quality"]["extractor"],
            "n": r["n"], "scale_factor": state["latent"]["scale_factor"],
            "recon_seconds_per_image": r["seconds_per_image"]}


def score_checkpoint(run_dir: Path, ckpt: Path, data_dir: str | None, n: int, sampler: str, steps: int, spacing: str,
                     seed: int) -> dict:
    """FID/KID of n samples of one checkpoint (EMA), cached in RUN/eval/ldm/."""
    path = run_dir / "eval" / "ldm" / f"{ckpt.name}-{sampler}-{spacing}-{steps}-n{n}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    from diffusionlab.data import from_model_range
    from diffusionlab.evaluation.evaluate import build_extractor, load_split, quality_with_floor
    from diffusionlab.runs import load_run
    from diffusionlab.sampling import SamplerOptions, generate
    from diffusionlab.training.checkpoint import load_checkpoint

    run = load_run(run_dir, ckpt)
    state = load_checkpoint(ckpt, with_optimizer=False).state
    data = _data(run_dir, data_dir)
    train, test = load_split(data, "train"), load_split(data, "test")
    extractor = build_extractor("domain", train, test)
    t0 = time.perf_counter()
    res = generate(run.denoiser, run.process, run.model_shape, n, sampler, steps,
                   options=SamplerOptions(sigma_spacing=spacing), seed=seed, codec=run.codec)
    q = quality_with_floor(from_model_range(res.images), train, test, extractor, seed=seed)
    row = {"run": run_dir.name, "step": state["step"], "images_seen": state["images_seen"],
           "train_seconds": state["elapsed_seconds"] + state.get("codec_encode_seconds", 0.0),
           "fid": q["fid"], "kid": q["kid_mean"], "floor": q["floor"]["fid"], "nfe": res.nfe,
           "sample_seconds": time.perf_counter() - t0, "extractor": q["extractor"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    print(f"{run_dir.name} {ckpt.name}: FID {row['fid']:.2f} at {row['train_seconds'] / 60:.1f} min", flush=True)
    return row


def step_seconds(run_dir: Path) -> float:
    """Seconds per training step without the checkpoints and preview grids: 1 / the median logged it/s (the windows
    with a checkpoint or a grid are the slow tail the median ignores)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return 1.0 / statistics.median(r["it_per_s"] for r in rows)


def curve(run_dir: Path, data_dir: str | None, n: int, sampler: str, steps: int, spacing: str, seed: int) -> list[dict]:
    """Every checkpoint of a run, scored; `step_seconds` adds the training time spent in steps alone."""
    from diffusionlab.training.checkpoint import list_checkpoints, load_checkpoint

    per_step = step_seconds(run_dir)
    rows = []
    for _, c in list_checkpoints(run_dir):
        row = score_checkpoint(run_dir, c, data_dir, n, sampler, steps, spacing, seed)
        encode = load_checkpoint(c, with_optimizer=False).state.get("codec_encode_seconds", 0.0)
        rows.append({**row, "step_seconds": row["step"] * per_step + encode})
    return rows


def sampling_speed(run_dir: Path, nfe: int, n: int = 100, repeats: int = 3) -> dict:
    """Seconds per image for n images with DDIM-nfe, EMA weights, batch n: median of `repeats`, decoding included."""
    from diffusionlab.runs import load_run
    from diffusionlab.sampling import generate

    run = load_run(run_dir)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        generate(run.denoiser, run.process, run.model_shape, n, "ddim", nfe, seed=r, codec=run.codec, batch_size=n)
        times.append(time.perf_counter() - t0)
    times = times[1:]  # the first repeat warms the allocator and oneDNN's kernel cache
    decode = 0.0
    if not run.codec.pixel_space:
        z = torch.randn((n, *run.model_shape))
        t0 = time.perf_counter()
        run.codec.decode(z)
        decode = time.perf_counter() - t0
    return {"run": run_dir.name, "nfe": nfe, "n": n, "seconds_per_image": statistics.median(times) / n,
            "decode_seconds_per_image": decode / n, "threads": torch.get_num_threads()}


def reach(rows: list[dict], target: float) -> dict | None:
    """The first checkpoint whose FID is at most `target`."""
    return next((r for r in sorted(rows, key=lambda r: r["step"]) if r["fid"] <= target), None)


def plot(pixel: list[dict], latent: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for rows, label in ((pixel, "pixel DDPM (mnist)"), (latent, "latent DDPM (mnist-ldm)")):
        rows = sorted(rows, key=lambda r: r["step"])
        ax[0].plot([r["train_seconds"] / 60 for r in rows], [r["fid"] for r in rows], "o-", label=label)
        ax[1].plot([r["images_seen"] / 1000 for r in rows], [r["fid"] for r in rows], "o-", label=label)
    for a, x in zip(ax, ("training wall time (min)", "training images seen (thousands)")):
        a.axhline(pixel[0]["floor"], color="grey", ls="--", lw=0.8, label="real-data floor")
        a.set_xlabel(x)
        a.set_ylabel("FID (domain extractor)")
        a.set_yscale("log")
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args: argparse.Namespace) -> None:
    from diffusionlab.evaluation.evaluate import load_split  # noqa: F401 (fail early if the data is missing)

    ae = autoencoder_report(args.ae, args.data_dir, args.ae_n)
    pixel = curve(args.pixel, args.data_dir, args.n, args.sampler, args.steps, args.sigma_spacing, args.seed)
    latent = curve(args.latent, args.data_dir, args.n, args.sampler, args.steps, args.sigma_spacing, args.seed)
    speeds = [(sampling_speed(args.pixel, nfe), sampling_speed(args.latent, nfe)) for nfe in args.nfe]
    plot_path = Path(__file__).resolve().parents[1] / "docs" / "ldm_fid_compute.png"
    plot(pixel, latent, plot_path)
    final = sorted(pixel, key=lambda r: r["step"])[-1]
    hit = reach(latent, final["fid"])
    seeds = []
    if hit is not None:  # seed noise at the crossing: the same two checkpoints at other sampling seeds
        for s in args.check_seeds:
            p = score_checkpoint(args.pixel, args.pixel / "checkpoints" / f"step_{final['step']:08d}", args.data_dir,
                                 args.n, args.sampler, args.steps, args.sigma_spacing, s)
            q = score_checkpoint(args.latent, args.latent / "checkpoints" / f"step_{hit['step']:08d}", args.data_dir,
                                 args.n, args.sampler, args.steps, args.sigma_spacing, s)
            seeds.append((s, p["fid"], q["fid"]))
    lines = [f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. Written by `python benchmarks/bench_ldm.py "
             f"report {args.ae} {args.pixel} {args.latent} --data-dir DIR --n {args.n} --write`.", "",
             f"Every score: {args.n} samples of the EMA weights, {args.sampler} with {args.steps} steps "
             f"(`--sigma-spacing {args.sigma_spacing}`), seed {args.seed}, the domain extractor "
             f"({final['extractor']}); real-data floor FID {final['floor']:.2f}.", "",
             "### The autoencoder", "",
             "| run | latents | compression | params | PSNR (8-bit, mean / median) | rFID | floor | train time |",
             "|---|---|---|---|---|---|---|---|",
             f"| {Path(ae['run']).name} (step {ae['step']}) | {'x'.join(map(str, ae['latent_shape']))} (f = {ae['factor']}) | "
             f"{ae['compression']:.2f}x | {ae['params'] / 1e6:.2f}M | {ae['psnr_mean']:.2f} / {ae['psnr_median']:.2f} dB | "
             f"{ae['rfid']:.2f} | {ae['floor_fid']:.2f} | {ae['train_seconds'] / 60:.1f} min |", "",
             f"rFID and PSNR on the first {ae['n']} test images (reconstruction from the posterior mean); latent "
             f"scale factor 1/std(z) = {ae['scale_factor']:.4f}.", "",
             "### FID against training compute", "",
             "Training time: the wall time the loop recorded at the checkpoint (checkpoint writes and preview grids "
             "included); step time: steps / the run's median logged it/s (steps alone). Both include, for the latent "
             "model, the one-time encoding of the training set.", "",
             "| model | step | images seen | training time (min) | step time (min) | FID | KID |",
             "|---|---|---|---|---|---|---|"]
    for rows in (pixel, latent):
        for r in sorted(rows, key=lambda r: r["step"]):
            lines.append(f"| {r['run']} | {r['step']} | {r['images_seen']} | {r['train_seconds'] / 60:.1f} | "
                         f"{r['step_seconds'] / 60:.1f} | {r['fid']:.2f} | {r['kid']:.4f} |")
    lines += ["", "![FID against training compute](docs/ldm_fid_compute.png)", ""]
    if hit is None:
        lines.append(f"Goal (the latent model reaches the pixel model's final FID {final['fid']:.2f} with at least 4x "
                     f"less compute): **not met**, the latent model never reaches it (best "
                     f"{min(r['fid'] for r in latent):.2f}).")
    else:
        ratio_t = final["train_seconds"] / hit["train_seconds"]
        ratio_s = final["step_seconds"] / hit["step_seconds"]
        images = hit["images_seen"] / final["images_seen"]
        with_ae = final["train_seconds"] / (hit["train_seconds"] + ae["train_seconds"])
        lines.append(f"Goal (the latent model reaches the pixel model's final FID {final['fid']:.2f} with at least 4x "
                     f"less compute): the latent model reaches FID {hit['fid']:.2f} at step {hit['step']}: "
                     f"{ratio_t:.2f}x less wall time ({'met' if ratio_t >= 4 else 'not met'}), {ratio_s:.2f}x less step "
                     f"time ({'met' if ratio_s >= 4 else 'not met'}), having seen {images:.2f}x the images (its steps "
                     f"are cheaper, not fewer). Counting the autoencoder's own training as well: {with_ae:.2f}x.")
        if seeds:
            lines += ["", "Seed noise at that crossing (same checkpoints, other sampling seeds):", "",
                      "| seed | pixel, step %d | latent, step %d |" % (final["step"], hit["step"]), "|---|---|---|"]
            lines += [f"| {s} | {p:.2f} | {q:.2f} |" for s, p, q in [(args.seed, final["fid"], hit["fid"]), *seeds]]
    lines += ["", "### Sampling speed per image (DDIM, batch 100, median of 3, decoding included)", "",
              "| NFE | pixel s/image | latent s/image (decode) | speed-up |", "|---|---|---|---|"]
    for p, q in speeds:
        lines.append(f"| {p['nfe']} | {p['seconds_per_image'] * 1e3:.2f} ms | {q['seconds_per_image'] * 1e3:.2f} ms "
                     f"({q['decode_seconds_per_image'] * 1e3:.2f} ms) | {p['seconds_per_image'] / q['seconds_per_image']:.1f}x |")
    publish(HEADING, "\n".join(lines), args.write)
    (args.latent / "eval" / "ldm" / "report.json").write_text(json.dumps({"ae": ae, "pixel": pixel, "latent": latent,
                                                                          "speed": speeds}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ae")
    a.add_argument("ae", type=Path)
    for q in (sub.add_parser("curve"), sub.add_parser("report")):
        if q.prog.endswith("report"):
            q.add_argument("ae", type=Path)
        q.add_argument("pixel", type=Path)
        q.add_argument("latent", type=Path)
        q.add_argument("--n", type=int, default=500)
        q.add_argument("--sampler", default="dpmpp2m-sde")
        q.add_argument("--steps", type=int, default=10)
        q.add_argument("--sigma-spacing", default="time")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--nfe", type=int, nargs="+", default=[10, 50])
        q.add_argument("--check-seeds", type=int, nargs="*", default=[1, 2])
        q.add_argument("--write", action="store_true")
    s = sub.add_parser("speed")
    s.add_argument("pixel", type=Path)
    s.add_argument("latent", type=Path)
    s.add_argument("--nfe", type=int, nargs="+", default=[10, 50])
    for q in (a, *sub.choices.values()):
        if not any(x.dest == "data_dir" for x in q._actions):
            q.add_argument("--data-dir")
        if not any(x.dest == "ae_n" for x in q._actions):
            q.add_argument("--ae-n", type=int, default=10000)
    args = p.parse_args()
    if args.cmd == "ae":
        print(json.dumps(autoencoder_report(args.ae, args.data_dir, args.ae_n), indent=1))
    elif args.cmd == "curve":
        for run in (args.pixel, args.latent):
            for row in curve(run, args.data_dir, args.n, args.sampler, args.steps, args.sigma_spacing, args.seed):
                print(json.dumps(row))
    elif args.cmd == "speed":
        for nfe in args.nfe:
            print(json.dumps(sampling_speed(args.pixel, nfe)), json.dumps(sampling_speed(args.latent, nfe)))
    else:
        report(args)


if __name__ == "__main__":
    main()
