"""The training loop's bookkeeping, the same for every model kind (Ho et al. 2020, Algorithm 1: "repeat ... until
converged").

What a model kind trains -- its networks, its optimizers and one optimisation step -- is a `TrainingTask`
(training/diffusion.py for the Gaussian families; a kind with a discriminator brings a second network and a second
optimizer in `extra`). This module owns everything else:

- HF Accelerate: device placement, mixed precision and, under `accelerate launch`, data-parallel processes;
- step-derived randomness (determinism.py): every draw of step s comes from a generator seeded by (seed, s), so a
  resumed run continues bit-for-bit as if it had never stopped, and N processes with global batch B train the same
  model as one process with batch B;
- the step or wall-clock budget, learning-rate warm-up, the EMA of the main network;
- progress (loss, it/s, ETA), metrics.jsonl and loss.png, preview grids, and atomic checkpoints with resume.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ConfigError
from ..viz import plot_metrics
from ..atomic import atomic_write_bytes, atomic_write_text
from .checkpoint import (latest_checkpoint, list_checkpoints, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .config import OptimConfig
from .determinism import BatchStream, derive_seed, generator
from .ema import EMA

# Keys that separate the independent random streams derived from the run's seed.
INIT_KEY, STEP_KEY, DROPOUT_KEY = 1, 2, 3


@dataclass
class StepContext:
    """What one optimisation step may use: its number, its random stream, its share of the global batch."""

    step: int
    generator: torch.Generator  # every random draw of this step, for the whole global batch (on every process)
    indices: Tensor  # dataset indices of the global batch, in stream order
    mine: slice  # this process's rows of the global batch
    accelerator: Accelerator

    @property
    def device(self) -> torch.device:
        """Where the networks live."""
        return self.accelerator.device

    def autocast(self) -> AbstractContextManager[Any]:
        """The mixed-precision context of the run."""
        return self.accelerator.autocast()

    def backward(self, loss: Tensor) -> None:
        """loss.backward(), scaled and synchronised by Accelerate."""
        self.accelerator.backward(loss)

    def clip_grad_norm(self, parameters: Any, max_norm: float) -> None:
        """Clip the global gradient norm (across processes)."""
        self.accelerator.clip_grad_norm_(parameters, max_norm)

    def gather(self, x: Tensor) -> Tensor:
        """x from every process, concatenated in rank order."""
        return self.accelerator.gather(x)


class TrainingTask(Protocol):
    """What a model kind trains. `model` is the main network: the EMA follows it and sampling uses its EMA weights."""

    config: dict[str, Any]  # the run's complete config (written to config.json and into every checkpoint)
    description: str  # one line for the start of training, e.g. "ddpm on digits (1797 images (1, 8, 8))"
    num_examples: int  # size of the training set (the batch stream's epoch)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    extra: dict[str, tuple[nn.Module, torch.optim.Optimizer]]  # further networks, each with its own optimizer
    base_lr: dict[str, float]  # peak learning rate of "model" and of each extra network (before warm-up)
    files: dict[str, bytes]  # files a new run directory keeps (path inside it -> bytes), e.g. a codec's weights

    def step(self, ctx: StepContext) -> dict[str, Tensor]:
        """One optimisation step; the losses to log by name ("loss" first: the one the progress bar shows)."""
        ...

    def state_dict(self, ema_weights: dict[str, Tensor]) -> dict[str, Any]:
        """JSON-able state beyond the networks and optimizers, saved in every checkpoint's state.json (it may be
        computed from the EMA weights being saved, e.g. an autoencoder's latent statistics)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` from a checkpoint's state.json."""
        ...

    def preview(self, ema_weights: dict[str, Tensor], path: Path) -> Path:
        """Draw the preview grid (fixed seed, so grids are comparable across steps) with these weights."""
        ...


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


def format_eta(seconds: float) -> str:
    """A duration as 1h02m or 3m05s ('?' when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(max(0, int(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def prepare_run_dir(run_dir: Path, config: dict[str, Any], resume: bool, files: dict[str, bytes] | None = None) -> None:
    """Create a new run directory (with `files`, e.g. a codec's weights), or check an existing one for --resume;
    never overwrite a run. config.json is written last: its presence marks a complete run directory."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"--resume: {run_dir} is not a run directory (no config.json)")
        for name in files or {}:
            if not (run_dir / name).is_file():
                raise ConfigError(f"--resume: {run_dir / name} is missing (the run's codec weights)")
    else:
        if (run_dir / "config.json").exists() or list_checkpoints(run_dir):
            raise ConfigError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, data in (files or {}).items():
            atomic_write_bytes(run_dir / name, data)
    (run_dir / "samples").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows logged after `step` (they belong to the part of a killed run that is redone)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def make_accelerator(tc: OptimConfig) -> Accelerator:
    """HF Accelerate on the GPU when there is one, else on the CPU (which is what lets it run gloo processes)."""
    on_cpu = os.environ.get("DIFFUSIONLAB_CPU") == "1" or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=on_cpu)
    if tc.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("fp16 mixed precision needs a GPU; use bf16 on CPU")
    if tc.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size {tc.batch_size} must be divisible by the number of processes "
                          f"({accelerator.num_processes})")
    return accelerator


def run_training(tc: OptimConfig, run_dir: Path, make_task: Callable[[Accelerator], TrainingTask], *,
                 resume: bool = False, progress: bool | None = None) -> TrainResult:
    """Build the task (`make_task`, given the accelerator) and train it until the step or time budget is spent."""
    try:
        return _run(tc, Path(run_dir), make_task, resume, progress)
    finally:
        # Accelerate keeps its settings (mixed precision, device) in a process-wide singleton; one call is one run,
        # so release them and let the next run in the same Python process (a notebook, the tests) choose its own.
        # The process group (PartialState) is kept for torchrun.
        AcceleratorState._reset_state(reset_partial_state=False)


def _run(tc: OptimConfig, run_dir: Path, make_task: Callable[[Accelerator], TrainingTask], resume: bool,
         progress: bool | None) -> TrainResult:
    accelerator = make_accelerator(tc)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    local_b = tc.batch_size // world
    task = make_task(accelerator)
    if main:
        prepare_run_dir(run_dir, task.config, resume, task.files)
    accelerator.wait_for_everyone()
    ema = EMA(task.model, tc.ema_decay, tc.ema_warmup)

    start, prior_elapsed, overhead = 0, 0.0, 0.0
    metrics_path = run_dir / "metrics.jsonl"
    if resume and list_checkpoints(run_dir):
        ckpt = load_checkpoint(latest_checkpoint(run_dir))
        task.model.load_state_dict(ckpt.model)
        task.optimizer.load_state_dict(ckpt.optimizer)
        for name, (module, opt) in task.extra.items():
            module.load_state_dict(ckpt.extra[name])
            opt.load_state_dict(ckpt.extra_optimizers[name])
        ema.load_state_dict(ckpt.ema, ckpt.state["ema_updates"])
        set_rng_state(ckpt.state["rng"])
        task.load_state_dict(ckpt.state)
        start, prior_elapsed = ckpt.step, float(ckpt.state.get("elapsed_seconds", 0.0))
        overhead = float(ckpt.state.get("overhead_seconds", 0.0))
    if main:
        _truncate_metrics(metrics_path, start)

    task.model, task.optimizer = accelerator.prepare(task.model, task.optimizer)
    for name, (module, opt) in list(task.extra.items()):
        task.extra[name] = accelerator.prepare(module, opt)
    raw_model = accelerator.unwrap_model(task.model)
    ema.shadow = {k: v.to(accelerator.device) for k, v in ema.shadow.items()}
    stream = BatchStream(task.num_examples, tc.seed)
    optimizers = {"model": task.optimizer, **{name: opt for name, (_, opt) in task.extra.items()}}

    total = tc.steps if tc.steps is not None else 10**12
    budget = tc.minutes * 60 if tc.minutes is not None else math.inf
    interactive = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=tc.steps, initial=start, desc="train", disable=not (main and interactive), dynamic_ncols=True)
    if main:
        what = f"{tc.steps} steps" if tc.steps is not None else f"{tc.minutes} min"
        print(f"training {task.description} -> {run_dir}  "
              f"[{what}, batch {tc.batch_size} on {world} process(es), {accelerator.device}]", flush=True)

    t0 = time.perf_counter()
    log_t, log_step, sums, loss_n, last_loss = t0, start, {}, 0, float("nan")
    step, last_ckpt, grid_path = start, None, None
    task.model.train()
    for module, _ in task.extra.values():
        module.train()
    while step < total:
        step += 1
        ctx = StepContext(step, generator(tc.seed, STEP_KEY, step), stream.batch(step, tc.batch_size),
                          slice(rank * local_b, (rank + 1) * local_b), accelerator)
        torch.manual_seed(derive_seed(tc.seed, DROPOUT_KEY, step, rank))  # dropout masks
        warm = min(1.0, step / max(1, tc.warmup_steps))
        for name, opt in optimizers.items():
            for group in opt.param_groups:
                group["lr"] = task.base_lr[name] * warm
        losses = task.step(ctx)
        ema.update(raw_model)

        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        loss_n += 1
        lr = task.base_lr["model"] * warm
        elapsed = prior_elapsed + time.perf_counter() - t0
        stop = step >= total or elapsed >= budget
        if tc.minutes is not None and world > 1:  # every process must stop at the same step
            stop = bool(broadcast(torch.tensor([int(stop)], device=accelerator.device))[0])
        if main:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / loss_n:.4f}", lr=f"{lr:.1e}", refresh=False)
        if step % tc.log_every == 0 or stop:
            means = {k: float(accelerator.reduce(torch.tensor(v / loss_n, device=accelerator.device), "mean"))
                     for k, v in sums.items()}
            now = time.perf_counter()
            its = (step - log_step) / max(now - log_t, 1e-9)
            left = min((total - step) / its if tc.steps is not None else math.inf, budget - elapsed)
            if main:
                row = {"step": step, **means, "lr": lr, "it_per_s": its, "images_seen": step * tc.batch_size,
                       "elapsed_s": round(elapsed, 2)}
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if not interactive:
                    of = f"/{tc.steps}" if tc.steps is not None else ""
                    others = "".join(f" | {k} {v:.4f}" for k, v in means.items() if k != "loss")
                    print(f"step {step}{of} | loss {means['loss']:.4f}{others} | {its:.1f} it/s | "
                          f"ETA {format_eta(left)}", flush=True)
            last_loss, log_t, log_step, sums, loss_n = means["loss"], now, step, {}, 0
        t_over = time.perf_counter()
        if step % tc.checkpoint_every == 0 or stop:
            if main:
                state: dict[str, Any] = {
                    "elapsed_seconds": elapsed, "images_seen": step * tc.batch_size, "ema_updates": ema.num_updates,
                    "rng": rng_state(), "config": task.config, "world_size": world, "version": __version__,
                    "loss": last_loss, "overhead_seconds": overhead,
                }
                state.update(task.state_dict({k: v.detach().cpu() for k, v in ema.state_dict().items()}))
                extra = {name: (accelerator.unwrap_model(module).state_dict(), opt.state_dict())
                         for name, (module, opt) in task.extra.items()}
                last_ckpt = save_checkpoint(run_dir, step, raw_model.state_dict(), ema.state_dict(),
                                            task.optimizer.state_dict(), state, keep=tc.keep_checkpoints, extra=extra)
                plot_metrics(metrics_path, run_dir / "loss.png")
            accelerator.wait_for_everyone()
        if main and (step % tc.sample_every == 0 or stop):
            grid_path = task.preview({k: v.detach().cpu() for k, v in ema.state_dict().items()},
                                     run_dir / "samples" / f"step_{step:08d}.png")
            task.model.train()
        overhead += time.perf_counter() - t_over  # checkpoints and preview grids: wall time that trains nothing
        if stop:
            break
    bar.close()
    elapsed = prior_elapsed + time.perf_counter() - t0
    if last_ckpt is None:
        last_ckpt = latest_checkpoint(run_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run_dir, step, last_loss, elapsed, last_ckpt, grid_path, main)


__all__ = ["DROPOUT_KEY", "INIT_KEY", "STEP_KEY", "StepContext", "TrainResult", "TrainingTask", "format_eta",
           "make_accelerator", "prepare_run_dir", "run_training"]
