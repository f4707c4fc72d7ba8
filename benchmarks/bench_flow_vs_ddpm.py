"""Flow matching against DDPM at an equal training budget on MNIST (issue 5): same network, batch, steps, seed.

Trains whichever of the two runs is missing (the `mnist` preset, an Improved-DDPM eps-model with learned variance,
and `mnist-flow`, conditional flow matching on the OT path, both --steps N), checks that the budgets match, then
scores each with the samplers that apply to it at matched NFE: FID/KID/precision/recall with the same domain
extractor and sample count as the FID-vs-NFE benchmark, whose cached rows it shares (RUN/eval/fid_nfe).

    python benchmarks/bench_flow_vs_ddpm.py --ddpm-run RUN_A --flow-run RUN_B --data-dir DIR --steps 1500 --n 200 --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cli, machine, publish, score_row  # noqa: E402

HEADING = "## Flow matching against DDPM at equal training budget"

# (label, sampler, steps) per family; the NFE is read back from each row.
DDPM_ROWS = [("DDPM ancestral (learned variance)", "ddpm", 1000), ("DDIM eta 1", "ddim", 10), ("DDIM eta 1", "ddim", 20),
             ("DDIM eta 1", "ddim", 50), ("DDIM eta 0", "ddim", 10), ("DDIM eta 0", "ddim", 20), ("DDIM eta 0", "ddim", 50),
             ("DPM-Solver++(2M)", "dpmpp2m", 10), ("DPM-Solver++(2M)", "dpmpp2m", 20), ("Heun (EDM)", "heun", 10)]
FLOW_ROWS = [("Euler (time space)", "ode-euler", 10), ("Euler (time space)", "ode-euler", 20),
             ("Euler (time space)", "ode-euler", 50), ("Euler (time space)", "ode-euler", 100),
             ("midpoint", "ode-midpoint", 10), ("RK4", "ode-rk4", 5), ("RK4", "ode-rk4", 25),
             ("DPM-Solver++(2M)", "dpmpp2m", 10), ("DPM-Solver++(2M)", "dpmpp2m", 20), ("Heun (EDM)", "heun", 10)]
ETA = {("DDIM eta 1", "ddim"): 1.0}


def latest_state(run: Path) -> tuple[int, dict]:
    """(step, state.json) of the run's newest checkpoint."""
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    return int(ckpt.name.split("_")[1]), json.loads((ckpt / "state.json").read_text())


def ensure_run(run: Path, preset: str, data_dir: str, steps: int, threads: int | None) -> None:
    """Train `preset` for `steps` steps into `run` if the run does not exist yet."""
    if run.exists():  # never touch an existing run (it may be training right now)
        if not (run / "checkpoints" / f"step_{steps:08d}").exists():
            sys.exit(f"{run} has no checkpoint at step {steps}: finish it with `diffusionlab train --resume`")
        return
    cli("train", "--preset", preset, "--data-dir", data_dir, "--steps", str(steps), "--sample-every", "1000000",
        "--progress", "lines", "--out", str(run), threads=threads)


def x0_error_table(runs: dict[str, Path], data_dir: str, n: int = 128) -> str:
    """Mean squared error of each model's x0_hat (clipped) by noise level sigma~ = sigma / alpha on MNIST test images.

    Both paths are put at the same sigma~ with the same eps, so the rows compare the networks' parameterizations:
    x0_hat = x~ - sigma~ eps_hat for an eps-model amplifies its eps error by sigma~.
    """
    import torch

    from diffusionlab.data import load_dataset, to_model_range
    from diffusionlab.runs import load_run

    x0 = to_model_range(load_dataset("mnist", data_dir, "test", None, None).images[:n])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    models = {family: load_run(run).denoiser for family, run in runs.items()}
    lines = ["| sigma~ | " + " | ".join(f"{f} x0_hat MSE" for f in models) + " |", "|---" * (len(models) + 1) + "|"]
    for ratio in (0.2, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0):
        row = []
        for den in models.values():
            t = den.path.t_from_ratio(torch.tensor([ratio], dtype=torch.float64))
            x_t = den.path.alpha(t).float() * x0 + den.path.sigma(t).float() * eps
            with torch.no_grad():
                row.append(float(((den(x_t, t.expand(n)).x0.clamp(-1, 1) - x0) ** 2).mean()))
        lines.append(f"| {ratio:g} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    return "\n".join(lines) + f"\n\n{n} test images, one noise draw; the pixel variance of the data is {float(x0.var()):.3f}."


def main() -> None:
    """Train what is missing, score both runs, and optionally write BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ddpm-run")
    ap.add_argument("--flow-run")
    ap.add_argument("--x0-error", nargs="+", metavar="LABEL=RUN",
                    help="only print the x0_hat error table of these runs (e.g. eps=R1 v=R2 flow=R3) and exit")
    ap.add_argument("--data-dir", default="../shared/datasets/mnist")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each run (batch 64: the presets')")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--family", choices=["ddpm", "flow", "both"], default="both", help="score only one side (to split over processes)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.x0_error:
        print(x0_error_table({label: Path(run) for label, run in (a.split("=", 1) for a in args.x0_error)}, args.data_dir))
        return
    if not (args.ddpm_run and args.flow_run):
        ap.error("--ddpm-run and --flow-run are required (or --x0-error)")
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    runs = {"ddpm": (Path(args.ddpm_run), "mnist", DDPM_ROWS), "flow": (Path(args.flow_run), "mnist-flow", FLOW_ROWS)}
    budget = {}
    for family, (run, preset, _) in runs.items():
        ensure_run(run, preset, args.data_dir, args.steps, args.threads)
        cfg = json.loads((run / "config.json").read_text())
        step, state = latest_state(run)
        if step != args.steps:
            sys.exit(f"{run}: newest checkpoint is step {step}, not {args.steps}")
        budget[family] = (cfg, state)
    (cd, _), (cf, _) = budget["ddpm"], budget["flow"]
    # The DDPM network also emits its learned variance (out_channels), and a continuous-time model scales t in [0, 1]
    # by time_scale = 1000 before the embedding that a DDPM model feeds integer t: the same embedding range.
    free = {"out_channels", "time_scale"}
    same_net = {k: v for k, v in cd["model"].items() if k not in free} == {k: v for k, v in cf["model"].items() if k not in free}
    same_train = all(cd["train"][k] == cf["train"][k] for k in ("batch_size", "lr", "warmup_steps", "ema_decay", "seed"))
    if not (same_net and same_train):
        sys.exit("the two runs differ in network or training settings: not an equal budget")

    lines = ["| family | sampler | NFE | FID | KID | precision | recall |", "|---|---|---|---|---|---|---|"]
    best: dict[str, list[tuple[int, float, str]]] = {"ddpm": [], "flow": []}
    q = None
    for family, (run, _, rows) in runs.items():
        for label, sampler, steps in rows:
            want = args.family in (family, "both")
            rep = score_row(run, sampler, steps, ETA.get((label, sampler), 0.0), args.n, args.threads, run_missing=want)
            if rep is None:
                continue
            q, nfe = rep["quality"], rep["sampling"]["nfe"]
            best[family].append((nfe, q["fid"], label))
            lines.append(f"| {family} | {label} | {nfe} | {q['fid']:.2f} | {q['kid_mean']:.4f} | {q['precision']:.3f} | {q['recall']:.3f} |")
    if q is None:
        sys.exit("nothing to report")
    floor = q["floor"]
    lines.append(f"| real data | floor (train vs test) | - | {floor['fid']:.2f} | {floor['kid_mean']:.4f} | "
                 f"{floor['precision']:.3f} | {floor['recall']:.3f} |")

    summary = []
    for cap in (10, 20, 50, 1000):
        picks = {f: min(((fid, lab, nfe) for nfe, fid, lab in best[f] if nfe <= cap), default=None) for f in best}
        if all(picks.values()):
            (fd, ld, nd), (ff, lf, nf) = picks["ddpm"], picks["flow"]
            summary.append(f"- At most {cap} NFE: DDPM best {fd:.2f} ({ld}, {nd} NFE), flow best {ff:.2f} ({lf}, {nf} NFE): "
                           f"flow/DDPM = {ff / fd:.2f}.")
    (_, sd), (_, sf) = budget["ddpm"], budget["flow"]
    body = f"""Machine: {machine()}. Date: {started}.
Command: `python benchmarks/bench_flow_vs_ddpm.py --ddpm-run {args.ddpm_run} --flow-run {args.flow_run} --steps {args.steps} --n {args.n} --write`

Budget: {args.steps} steps of batch {cd['train']['batch_size']} ({sd['images_seen']} images) each, the same
{cd['model']['base_channels']}-channel UNet (channel_mult {cd['model']['channel_mult']}; the DDPM model has 2 output
channels for its learned variance), optimiser, warm-up, EMA and seed. Wall-clock as logged by each run (shared,
noisy machine, so indicative only): DDPM {sd['elapsed_seconds'] / 60:.1f} min, flow {sf['elapsed_seconds'] / 60:.1f} min.
EMA weights, {args.n} samples per row, seed 0, x0 clipped where the sampler predicts it; scored against {q['n_real']}
MNIST test images with `{q['extractor']}` (the FID-vs-NFE section's extractor; its DDPM rows are these).

{chr(10).join(lines)}

{chr(10).join(summary)}

Where the difference comes from: the x0 prediction of each network at equal noise level.

{x0_error_table({f: r for f, (r, _, _) in runs.items()}, args.data_dir)}
"""
    publish(HEADING, body, args.write)


if __name__ == "__main__":
    main()
