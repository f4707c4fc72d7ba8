"""The peer samplers: diffusers' schedulers driven by *our* trained network, so only the sampler differs.

diffusers' DDPM-family schedulers index `alphas_cumprod[i]` for i = 0..999, which is our abar at step i + 1
(our step 0 is the clean data), so the network is called at t = i + 1 and the scheduler is given our own
betas (`trained_betas`), not a re-derived schedule. A learned-variance network's second half is dropped:
these schedulers use the mean half only (the variance does not enter deterministic solvers). Whatever the
network predicts (eps, x0 or v) is converted to (x0_hat, eps_hat) by the library's `to_prediction`, and the
scheduler is given the eps of the x0 prediction clipped to [-1, 1], exactly as our samplers clip by default:
without it, the cosine schedule's first steps (sqrt(abar) ~ 0.006) amplify the eps error into pure noise
(FID ~4900).

    python benchmarks/diffusers_samplers.py RUN_DIR --scheduler dpmsolver --steps 10 --n 500 --out FILE.npz

Writes FILE.npz (`images`, uint8, as `diffusionlab sample` does) for `diffusionlab evaluate RUN --fid --samples FILE`.
Benchmarks only; needs the `bench` extra (diffusers).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from diffusionlab.data import PIXEL_RANGE, from_model_range
from diffusionlab.prediction import to_prediction
from diffusionlab.runs import load_run
from diffusionlab.training.determinism import generator

SCHEDULERS = ("dpmsolver", "dpmsolver-sde", "euler")


def make_scheduler(name: str, betas: torch.Tensor):
    """DPMSolverMultistepScheduler (DPM-Solver++(2M) or its SDE form, diffusers' defaults otherwise) or
    EulerDiscreteScheduler, on our betas."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    common = dict(num_train_timesteps=len(betas), trained_betas=betas.double().numpy(), prediction_type="epsilon")
    if name in ("dpmsolver", "dpmsolver-sde"):
        algorithm = "sde-dpmsolver++" if name == "dpmsolver-sde" else "dpmsolver++"
        return DPMSolverMultistepScheduler(algorithm_type=algorithm, solver_order=2, **common)
    return EulerDiscreteScheduler(**common)


@torch.no_grad()
def sample(run_dir: Path, name: str, steps: int, n: int, seed: int = 0, batch_size: int = 250,
           clip_x0: bool = True, mixed_precision: str = "no") -> tuple[np.ndarray, int]:
    """n samples in [0, 255] from the run's EMA network with diffusers' scheduler `name`; also the NFE per sample.
    `mixed_precision` bf16 runs the network under bf16 autocast, as `diffusionlab sample --mixed-precision bf16`."""
    from diffusionlab.training.precision import for_sampling

    run = load_run(run_dir)
    run.net, _ = for_sampling(run.net, mixed_precision)
    betas = run.process.schedule.betas[1:].float()  # betas[0] is the padding of our step 0
    shape = run.model_shape  # what the network sees (the codec's latent shape; the image shape for pixels)
    clip = run.codec.x0_clip if clip_x0 else None  # the range our samplers clip x0 to (pixels: [-1, 1])
    learned = run.process.learned_variance
    x_T = torch.randn((n, *shape), generator=generator(seed, 0))  # the same x_T as `diffusionlab sample`
    g = generator(seed, 1)  # the SDE scheduler's per-step noise (its own stream: not comparable draw for draw)
    out, nfe = [], 0
    for start in range(0, n, batch_size):
        sched = make_scheduler(name, betas)
        sched.set_timesteps(steps)
        x = x_T[start:start + batch_size] * sched.init_noise_sigma
        nfe = 0
        abar_all = run.process.schedule.alpha_bar.float()
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)  # x_t in variance-preserving coordinates
            out_t = run.net(inp, torch.full((x.shape[0],), float(t) + 1.0))
            if learned:
                out_t = out_t.chunk(2, dim=1)[0]
            abar = abar_all[int(t) + 1]
            pred = to_prediction(out_t, run.process.prediction, inp, abar.sqrt(), (1 - abar).sqrt())
            eps = pred.eps
            if clip is not None:  # the x0 clipping our samplers apply, so that only the solver differs
                eps = (inp - abar.sqrt() * pred.x0.clamp(*clip)) / (1 - abar).sqrt()
            x = sched.step(eps, t, x, generator=g).prev_sample
            nfe += 1
        out.append(run.codec.decode(x).clamp(*PIXEL_RANGE))  # decoded as `diffusionlab sample` does
    u8 = from_model_range(torch.cat(out))
    return (u8[:, 0].numpy() if u8.shape[1] == 1 else u8.permute(0, 2, 3, 1).numpy()), nfe


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--scheduler", choices=SCHEDULERS, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    images, nfe = sample(args.run_dir, args.scheduler, args.steps, args.n, args.seed)
    tmp = args.out.with_name(f".{args.out.stem}.tmp.npz")
    np.savez_compressed(tmp, images=images, nfe=nfe)
    os.replace(tmp, args.out)
    print(f"{args.n} samples, diffusers {args.scheduler} {args.steps} steps, NFE {nfe}, {time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
