"""The training loop (Ho et al. 2020, Algorithm 1) on HF Accelerate.

Accelerate places the model, runs mixed precision and, under `accelerate launch`, data-parallel
processes. Every random draw of step s is derived from (seed, s) (see determinism.py), so:
- a run resumed from a checkpoint continues bit-for-bit as if it had never stopped, and
- N processes with global batch B train the same model as one process with batch B.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast
from tqdm.auto import tqdm

from .. import __version__
from ..data import ImageDataset, from_model_range, load_dataset, to_model_range
from ..errors import ConfigError
from ..runs import build_network, build_process
from ..sampling import generate
from ..viz import plot_metrics, save_grid
from .checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import RunConfig
from .determinism import BatchStream, derive_seed, generator
from .ema import EMA
from .timesteps import LossSecondMomentSampler

# Keys that separate the independent random streams derived from the run's seed.
INIT_KEY, STEP_KEY, DROPOUT_KEY = 1, 2, 3


@dataclass
class TrainResult:
    """What a finished (or budget-stopped) run produced."""

    run_dir: Path
    step: int
    loss: float
    elapsed_seconds: float
    checkpoint: Path
    sample_grid: Path | None
    is_main_process: bool = True


def fill_model_config(cfg: RunConfig, data: ImageDataset) -> None:
    """Complete the `model` section from the data: image size, channels, number of classes."""
    m = cfg.model
    m["image_size"] = data.height if data.height == data.width else [data.height, data.width]
    m["in_channels"] = data.channels
    # A learned reverse variance doubles the output channels (iDDPM: the second half is v).
    m["out_channels"] = 2 * data.channels if cfg.process.variance == "learned" else None
    if cfg.process.method != "ddpm":
        # Continuous t in [0, 1]: scale it like DDPM's steps 0..1000 so the sinusoidal embedding's frequencies
        # (tuned for integer steps) still separate nearby times. A value in the config is kept.
        m.setdefault("time_scale", 1000.0)
    if cfg.train.class_conditional:
        if data.labels is None or not data.num_classes:
            raise ConfigError(f"class_conditional training needs labels, and dataset {data.name} has none")
        m["num_classes"] = data.num_classes
    else:
        m["num_classes"] = None


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(max(0, int(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def prepare_run_dir(run_dir: Path, cfg: RunConfig, resume: bool) -> None:
    """Create a new run directory, or check an existing one for --resume; never overwrite a run."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"--resume: {run_dir} is not a run directory (no config.json)")
    else:
        if (run_dir / "config.json").exists() or list_checkpoints(run_dir):
            raise ConfigError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows logged after `step` (they belong to the part of a killed run that is redone)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def sample_grid(cfg: RunConfig, ema: EMA, shape: tuple[int, int, int], path: Path) -> Path:
    """Draw the preview grid with the EMA weights and a fixed seed (so grids are comparable across steps)."""
    preview = build_network(cfg.model)
    preview.load_state_dict({k: v.detach().cpu() for k, v in ema.state_dict().items()})
    preview.eval()
    process = build_process(cfg.process)
    s = cfg.sample
    y = None
    if cfg.model.get("num_classes"):
        y = torch.arange(s.n) % cfg.model["num_classes"]
    result = generate(process.denoiser(preview), process, shape, s.n, sampler=s.sampler, steps=s.steps, eta=s.eta,
                      clip_x0=s.clip_x0, seed=cfg.train.seed, y=y)
    return save_grid(from_model_range(result.images), path, nrow=int(math.ceil(math.sqrt(s.n))))


def train(cfg: RunConfig, run_dir: Path, resume: bool = False, progress: bool | None = None) -> TrainResult:
    """Train (or resume) the run in `run_dir` until its step or time budget is spent."""
    try:
        return _train(cfg, run_dir, resume, progress)
    finally:
        # Accelerate keeps its settings (mixed precision, device) in a process-wide singleton; one call of
        # train() is one run, so release them and let the next run in the same Python process (a notebook,
        # the tests) choose its own. The process group (PartialState) is kept for torchrun.
        AcceleratorState._reset_state(reset_partial_state=False)


def _train(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool | None) -> TrainResult:
    run_dir = Path(run_dir)
    tc = cfg.train
    # cpu=True when there is no accelerator: it is what lets Accelerate run data-parallel CPU processes
    # (gloo) under torchrun; on a GPU machine Accelerate places the model on the GPU as usual.
    on_cpu = os.environ.get("DIFFUSIONLAB_CPU") == "1" or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=on_cpu)
    if tc.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("fp16 mixed precision needs a GPU; use bf16 on CPU")
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if tc.batch_size % world:
        raise ConfigError(f"batch_size {tc.batch_size} must be divisible by the number of processes ({world})")
    local_b = tc.batch_size // world

    data = load_dataset(cfg.data.source, cfg.data.data_dir, cfg.data.split, cfg.data.image_size, cfg.data.channels)
    fill_model_config(cfg, data)
    if main:
        prepare_run_dir(run_dir, cfg, resume)
    accelerator.wait_for_everyone()

    process = build_process(cfg.process)
    t_sampling = cfg.process.timestep_sampling
    importance = t_sampling == "importance" or (t_sampling == "auto" and cfg.process.loss == "vlb")
    t_sampler = LossSecondMomentSampler(process.T) if importance else None
    torch.manual_seed(derive_seed(tc.seed, INIT_KEY))  # identical initial weights on every process
    net = build_network(cfg.model)
    ema = EMA(net, tc.ema_decay, tc.ema_warmup)
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay)

    start, prior_elapsed = 0, 0.0
    metrics_path = run_dir / "metrics.jsonl"
    if resume and list_checkpoints(run_dir):
        ckpt = load_checkpoint(latest_checkpoint(run_dir))
        net.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
        ema.load_state_dict(ckpt.ema, ckpt.state["ema_updates"])
        set_rng_state(ckpt.state["rng"])
        if t_sampler is not None:
            t_sampler.load_state_dict(ckpt.state["timestep_sampler"])
        start, prior_elapsed = ckpt.step, float(ckpt.state.get("elapsed_seconds", 0.0))
    if main:
        _truncate_metrics(metrics_path, start)

    net, optimizer = accelerator.prepare(net, optimizer)
    raw_net = accelerator.unwrap_model(net)
    ema.shadow = {k: v.to(accelerator.device) for k, v in ema.shadow.items()}
    stream = BatchStream(len(data), tc.seed)
    images, labels = data.images, data.labels
    shape = (data.channels, data.height, data.width)
    null_label = data.num_classes if tc.class_conditional else None

    total = tc.steps if tc.steps is not None else 10**12
    budget = tc.minutes * 60 if tc.minutes is not None else math.inf
    interactive = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=tc.steps, initial=start, desc="train", disable=not (main and interactive), dynamic_ncols=True)
    if main:
        what = f"{tc.steps} steps" if tc.steps is not None else f"{tc.minutes} min"
        print(f"training {cfg.process.method} on {data.name} ({len(data)} images {shape}) -> {run_dir}  "
              f"[{what}, batch {tc.batch_size} on {world} process(es), {accelerator.device}]", flush=True)

    t0 = time.perf_counter()
    log_t, log_step, loss_sum, loss_n, last_loss = t0, start, 0.0, 0, float("nan")
    step, last_ckpt, grid_path = start, None, None
    net.train()
    while step < total:
        step += 1
        # Algorithm 1, lines 2-4: x0 ~ q(x0), t ~ U{1..T} (or the family's law of t), eps ~ N(0, I) -- for the global batch.
        g = generator(tc.seed, STEP_KEY, step)
        idx = stream.batch(step, tc.batch_size)
        t, eps = process.draw((tc.batch_size, *shape), g)
        weights = None
        if t_sampler is not None:  # iDDPM section 3.3: t ~ p_t, loss weighted by 1 / (T p_t)
            t, weights = t_sampler.sample(tc.batch_size, g)
        flip = torch.rand(tc.batch_size, generator=g) < 0.5
        drop = torch.rand(tc.batch_size, generator=g) < tc.label_dropout
        mine = slice(rank * local_b, (rank + 1) * local_b)
        x0 = to_model_range(images[idx[mine]])
        if cfg.data.hflip:
            x0 = torch.where(flip[mine].view(-1, 1, 1, 1), x0.flip(3), x0)
        y = None
        if null_label is not None:
            y = torch.where(drop[mine], torch.full_like(labels[idx[mine]], null_label), labels[idx[mine]])
            y = y.to(accelerator.device)
        torch.manual_seed(derive_seed(tc.seed, DROPOUT_KEY, step, rank))  # dropout masks
        lr = tc.lr * min(1.0, step / max(1, tc.warmup_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with accelerator.autocast():
            # Algorithm 1, line 5: gradient step on || eps - eps_theta(sqrt(abar) x0 + sqrt(1 - abar) eps, t) ||^2
            per_example = process.loss(net, x0.to(accelerator.device), t[mine].to(accelerator.device),
                                       eps[mine].to(accelerator.device), y)
            loss = (per_example * weights[mine].to(accelerator.device)).mean() if weights is not None else per_example.mean()
        accelerator.backward(loss)
        if t_sampler is not None:  # every process records the whole global batch, in rank order
            t_sampler.update(t, accelerator.gather(per_example.detach().float()).cpu())
        if tc.grad_clip > 0:
            accelerator.clip_grad_norm_(net.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(raw_net)

        loss_sum += float(loss.detach())
        loss_n += 1
        elapsed = prior_elapsed + time.perf_counter() - t0
        stop = step >= total or elapsed >= budget
        if tc.minutes is not None and world > 1:  # every process must stop at the same step
            stop = bool(broadcast(torch.tensor([int(stop)], device=accelerator.device))[0])
        if main:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{lr:.1e}", refresh=False)
        if step % tc.log_every == 0 or stop:
            mean_loss = float(accelerator.reduce(torch.tensor(loss_sum / loss_n, device=accelerator.device), "mean"))
            now = time.perf_counter()
            its = (step - log_step) / max(now - log_t, 1e-9)
            left = min((total - step) / its if tc.steps is not None else math.inf, budget - elapsed)
            if main:
                row = {"step": step, "loss": mean_loss, "lr": lr, "it_per_s": its, "images_seen": step * tc.batch_size,
                       "elapsed_s": round(elapsed, 2)}
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if not interactive:
                    of = f"/{tc.steps}" if tc.steps is not None else ""
                    print(f"step {step}{of} | loss {mean_loss:.4f} | {its:.1f} it/s | ETA {_format_eta(left)}", flush=True)
            last_loss, log_t, log_step, loss_sum, loss_n = mean_loss, now, step, 0.0, 0
        if step % tc.checkpoint_every == 0 or stop:
            if main:
                state: dict[str, Any] = {
                    "elapsed_seconds": elapsed, "images_seen": step * tc.batch_size, "ema_updates": ema.num_updates,
                    "rng": rng_state(), "config": cfg.to_dict(), "world_size": world, "version": __version__,
                    "loss": last_loss,
                }
                if t_sampler is not None:
                    state["timestep_sampler"] = t_sampler.state_dict()
                last_ckpt = save_checkpoint(run_dir, step, raw_net.state_dict(), ema.state_dict(),
                                            optimizer.state_dict(), state, keep=tc.keep_checkpoints)
                plot_metrics(metrics_path, run_dir / "loss.png")
            accelerator.wait_for_everyone()
        if main and (step % tc.sample_every == 0 or stop):
            grid_path = sample_grid(cfg, ema, shape, run_dir / "samples" / f"step_{step:08d}.png")
            net.train()
        if stop:
            break
    bar.close()
    elapsed = prior_elapsed + time.perf_counter() - t0
    if last_ckpt is None:
        last_ckpt = latest_checkpoint(run_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run_dir, step, last_loss, elapsed, last_ckpt, grid_path, main)
