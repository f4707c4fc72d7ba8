"""The peer we measure against: diffusers' unconditional training recipe, on a wall-clock budget.

Mirrors `examples/unconditional_image_generation/train_unconditional.py` of diffusers (UNet2DModel +
DDPMScheduler, linear betas over 1000 steps, eps prediction, MSE, AdamW lr 1e-4 with betas (0.95, 0.999)
and weight decay 1e-6, 500 warm-up steps, EMAModel with inv_gamma 1, power 3/4, max decay 0.9999), with
the UNet scaled down to the parameter count of our `mnist` preset. The example's cosine learning-rate
decay needs the total step count, unknown under a time budget, so the rate stays constant after warm-up.
Samples are drawn with diffusers' DDIMScheduler (eta 0) built from the same scheduler config.

    python benchmarks/diffusers_recipe.py --data-dir ../shared/datasets/mnist --minutes 20 --out DIR

Writes DIR/unet.safetensors (EMA weights), DIR/metrics.json and DIR/samples.npz. Benchmarks only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file

from diffusionlab.data import from_model_range, load_dataset, to_model_range


def unet(block_out: tuple[int, ...] = (32, 64, 64)) -> UNet2DModel:
    """A UNet2DModel for 28x28x1 at the size of our mnist preset (~1.1M parameters), attention at 7x7."""
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=block_out,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=16)


def main() -> None:
    """Train for --minutes, then sample --n images with DDIM --steps."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4, help="the example's default 1e-4")
    ap.add_argument("--beta-schedule", default="linear", help="linear (the example's) or squaredcos_cap_v2 (cosine)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    data = load_dataset("mnist", args.data_dir, "train")
    model = unet()
    n_params = sum(p.numel() for p in model.parameters())
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=args.beta_schedule, prediction_type="epsilon")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_sched = get_scheduler("constant_with_warmup", optimizer=opt, num_warmup_steps=500)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    g = torch.Generator().manual_seed(args.seed)

    budget, t0, step, losses = args.minutes * 60, time.perf_counter(), 0, []
    model.train()
    while time.perf_counter() - t0 < budget:
        idx = torch.randint(0, len(data), (args.batch_size,), generator=g)
        clean = to_model_range(data.images[idx])
        noise = torch.randn(clean.shape, generator=g)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch_size,), generator=g)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(model(noisy, timesteps).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad()
        ema.step(model.parameters())
        step += 1
        losses.append(loss.item())
        if step % 100 == 0:
            el = time.perf_counter() - t0
            print(f"step {step} | loss {np.mean(losses[-100:]):.4f} | {step / el:.2f} it/s | {el / 60:.1f} min", flush=True)
    train_s = time.perf_counter() - t0

    ema.copy_to(model.parameters())
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "unet.safetensors"))
    ddim = DDIMScheduler.from_config(noise_scheduler.config)
    ddim.set_timesteps(args.steps)
    t1 = time.perf_counter()
    images = []
    gs = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for start in range(0, args.n, 250):
            x = torch.randn((min(250, args.n - start), 1, 28, 28), generator=gs)
            for t in ddim.timesteps:
                x = ddim.step(model(x, t).sample, t, x, eta=0.0).prev_sample
            images.append(from_model_range(x.clamp(-1, 1)))
    sample_s = time.perf_counter() - t1
    arr = torch.cat(images)[:, 0].numpy()
    np.savez_compressed(out / "samples.npz", images=arr)
    (out / "metrics.json").write_text(json.dumps({
        "steps": step, "train_seconds": train_s, "sample_seconds": sample_s, "params": n_params, "lr": args.lr, "beta_schedule": args.beta_schedule,
        "final_loss": float(np.mean(losses[-100:])), "images_seen": step * args.batch_size,
        "sampler": f"DDIMScheduler eta 0, {args.steps} steps", "n": args.n}, indent=1))
    print(f"done: {step} steps in {train_s / 60:.1f} min, {n_params} parameters, samples in {sample_s:.0f} s")


if __name__ == "__main__":
    main()
