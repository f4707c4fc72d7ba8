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
import shutil
import signal
import sys
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import __version__
from ..errors import CheckpointError, ConfigError, DivergedError, TrainingInterrupted
from ..faults import armed, maybe_fault
from ..viz import plot_metrics
from ..threads import thread_watch
from .checkpoint import (Checkpoint, NonFiniteError, latest_checkpoint, list_checkpoints, load_newest,
                         nonfinite_tensors, rng_state, save_checkpoint, set_rng_state)
from .config import OptimConfig
from .tensorboard_log import TensorBoardLog
from .determinism import BatchStream, derive_seed, generator
from .drift import check_changes, config_changes
from .ema import EMA, PowerEMA
from .lr_schedule import budget_fraction, lr_factor
from .posthoc_ema import set_aside_after, write_snapshot
from .precision import PrecisionChoice, resolve_mixed_precision
from .rundir import (CONFIG, METRICS, RunLock, append_jsonl, check_run_dir, clean_run_dir, fsync_file,
                     prepare_run_dir, record, sync_config, truncate_metrics)

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
    skipped: list[torch.optim.Optimizer] = field(default_factory=list)  # optimizers whose step was not finite

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

    def gather(self, x: Tensor) -> Tensor:
        """x from every process, concatenated in rank order."""
        return self.accelerator.gather(x)

    def apply(self, optimizer: torch.optim.Optimizer, parameters: Any, loss: Tensor, max_norm: float) -> bool:
        """After backward: clip the global gradient norm to `max_norm` (0: no clipping) and take the optimizer step
        -- unless the loss or the gradient is NaN or infinite, in which case the step is skipped (the weights and the
        optimizer's moments stay as they were) and counted by the loop's divergence guard. True if it stepped."""
        norm = self.accelerator.clip_grad_norm_(list(parameters), max_norm if max_norm > 0 else math.inf)
        finite = torch.tensor([float(torch.isfinite(loss.detach()).all()) * float(torch.isfinite(norm))],
                              device=self.device)
        if self.accelerator.num_processes > 1:  # every process must take the same decision
            finite = self.accelerator.reduce(finite, "min")
        ok = bool(finite.item() > 0)
        if ok:
            optimizer.step()
        else:
            self.skipped.append(optimizer)
        optimizer.zero_grad(set_to_none=True)
        return ok


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
    skipped_steps: int = 0  # steps skipped by the divergence guard (non-finite loss or gradient)
    rollbacks: int = 0  # times the run went back to its last checkpoint with a smaller learning rate


def format_eta(seconds: float) -> str:
    """A duration as 1h02m or 3m05s ('?' when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(max(0, int(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def make_accelerator(tc: OptimConfig) -> tuple[Accelerator, PrecisionChoice]:
    """HF Accelerate on the GPU when there is one, else on the CPU (which is what lets it run gloo processes), in the
    precision `tc.mixed_precision` resolves to here (precision.py). "auto" is replaced by that choice in `tc`, so
    the run's config.json records what it trained in and a resume keeps it."""
    on_cpu = os.environ.get("DIFFUSIONLAB_CPU") == "1" or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    device_type = "cpu" if on_cpu else "cuda" if torch.cuda.is_available() else "mps"
    choice = resolve_mixed_precision(tc.mixed_precision, device_type)
    tc.mixed_precision = choice.mixed_precision
    accelerator = Accelerator(mixed_precision=choice.mixed_precision, cpu=on_cpu)
    if tc.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size {tc.batch_size} must be divisible by the number of processes "
                          f"({accelerator.num_processes})")
    return accelerator, choice


def run_training(tc: OptimConfig, run_dir: Path, make_task: Callable[[Accelerator], TrainingTask], *,
                 resume: bool = False, progress: bool | None = None, allow_change: bool = False) -> TrainResult:
    """Build the task (`make_task`, given the accelerator) and train it until the step or time budget is spent.

    On resume, a change of the optimisation against the checkpoint's config needs `allow_change` (drift.py)."""
    try:
        return _Run(tc, Path(run_dir), resume, progress, allow_change).train(make_task)
    finally:
        # Accelerate keeps its settings (mixed precision, device) in a process-wide singleton; one call is one run,
        # so release them and let the next run in the same Python process (a notebook, the tests) choose its own.
        # The process group (PartialState) is kept for torchrun.
        AcceleratorState._reset_state(reset_partial_state=False)


class _StopSignals:
    """SIGINT/SIGTERM during training: the first asks the loop to checkpoint the current step and stop; a second
    aborts at once (KeyboardInterrupt). Installed only from the main thread (signal handlers live there)."""

    def __init__(self, announce: bool):
        self.received: int | None = None
        self.announce = announce
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
                  "(send it again to abort without one)", file=sys.stderr, flush=True)

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _Run:
    """One call of `run_training`: the loop's state between its steps, so that resume, rollback and the final
    checkpoint share one `restore` and one `save`."""

    def __init__(self, tc: OptimConfig, run_dir: Path, resume: bool, progress: bool | None, allow_change: bool):
        self.tc, self.run_dir, self.resume, self.allow_change = tc, run_dir, resume, allow_change
        self.progress = progress
        self.lr_scale, self.rollbacks, self.skipped_total = 1.0, 0, 0
        self.prior_elapsed, self.overhead = 0.0, 0.0
        self.metrics_path = run_dir / METRICS

    def say(self, text: str) -> None:
        """One line for the user, from the main process only."""
        if self.main:
            tqdm.write(text, file=sys.stderr)

    def event(self, name: str, step: int, **fields: Any) -> None:
        """Record an event in the run's history.jsonl (main process)."""
        if self.main:
            record(self.run_dir, name, step, **fields)

    def train(self, make_task: Callable[[Accelerator], TrainingTask]) -> TrainResult:
        """Lock the run directory, build the task, restore or create the run, and train."""
        tc = self.tc
        accelerator, self.precision = make_accelerator(tc)
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        lock = RunLock(self.run_dir)
        existed = self.run_dir.exists()
        if self.main:
            lock.acquire()  # one writer per run, before any work (resumes included)
        try:
            if self.main:
                check_run_dir(self.run_dir, self.resume)
                lock.mark()
                removed = clean_run_dir(self.run_dir)
                if removed:
                    self.say(f"removed {len(removed)} temporary file(s) left by a killed run "
                             f"({', '.join(p.name for p in removed[:3])}{' ...' if len(removed) > 3 else ''})")
            with _StopSignals(announce=self.main) as signals:
                self.signals = signals
                self.task = make_task(accelerator)
                return self._train()
        except BaseException:
            if self.main and not existed and not (self.run_dir / CONFIG).exists():
                shutil.rmtree(self.run_dir, ignore_errors=True)  # a new run that failed before it began: no trace
            raise
        finally:
            lock.release()

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.task.optimizer, **{name: opt for name, (_, opt) in self.task.extra.items()}}

    def restore(self, ckpt: Checkpoint) -> None:
        """Load a checkpoint into the task, the EMA and the RNGs; the config's optimiser settings (not the saved
        ones) stay in force, so an allowed change of them takes effect. CheckpointError if it does not fit."""
        task, unwrap = self.task, self.accelerator.unwrap_model
        saved = ckpt.state.get("config")
        if isinstance(saved, dict):
            changes = check_changes([c for c in config_changes(saved, task.config) if c.kind != "bookkeeping"
                                     and c.old is not None and c.new is not None], self.allow_change,
                                    f"resuming from {ckpt.path.name}")
            self.changes = changes
        modules = {"model": unwrap(task.model), **{n: unwrap(m) for n, (m, _) in task.extra.items()}}
        weights = {"model": ckpt.model, **ckpt.extra}
        try:
            for name, module in modules.items():
                module.load_state_dict(weights[name])
            for name, opt in self._optimizers().items():
                hyper = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in opt.param_groups]
                opt.load_state_dict(ckpt.optimizer if name == "model" else ckpt.extra_optimizers[name])
                for group, h in zip(opt.param_groups, hyper):
                    group.update(h)
            self.ema.load_state_dict(ckpt.ema, ckpt.state["ema_updates"])
            self.ema.shadow = {k: v.to(self.accelerator.device) for k, v in self.ema.shadow.items()}
            self.restore_power_emas(ckpt)
            task.load_state_dict(ckpt.state)
            set_rng_state(ckpt.state["rng"])
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"does not fit this run ({type(e).__name__}: {str(e).splitlines()[0][:100]})") from None
        self.prior_elapsed = float(ckpt.state.get("elapsed_seconds", 0.0))
        self.overhead = float(ckpt.state.get("overhead_seconds", 0.0))
        self.lr_scale = float(ckpt.state.get("lr_scale", 1.0))
        self.rollbacks = int(ckpt.state.get("rollbacks", 0))
        self.skipped_total = int(ckpt.state.get("skipped_steps", 0))

    def restore_power_emas(self, ckpt: Checkpoint) -> None:
        """The post-hoc EMAs' averages and update counts from a checkpoint (KeyError if it did not track the same ones:
        an average cannot start late, its profile counts from the first update)."""
        saved = ckpt.state.get("posthoc_ema") or []
        if [p["sigma_rel"] for p in saved] != [e.sigma_rel for e in self.power_emas]:
            raise KeyError(f"it tracks post-hoc EMAs {[p['sigma_rel'] for p in saved]}, the config "
                           f"{[e.sigma_rel for e in self.power_emas]}")
        flat = ckpt.tensors.get("posthoc_ema", {})
        for i, (ema, p) in enumerate(zip(self.power_emas, saved)):
            prefix = f"{i}/"
            ema.load_state_dict({k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}, int(p["t"]))
            ema.shadow = {k: v.to(self.accelerator.device) for k, v in ema.shadow.items()}

    def load_newest(self) -> Checkpoint | None:
        """Restore the newest checkpoint that can be read, falling back to older ones and saying so; an unreadable
        one is renamed aside (step_N.unreadable), kept for inspection and out of the way of the next resume."""
        self.changes = []
        ckpt, skipped = load_newest(self.run_dir, accept=self.restore)
        for line in skipped:
            self.say(f"warning: checkpoint {line}; falling back to the one before it")
        if self.main and skipped and ckpt is not None:
            for step, path in list_checkpoints(self.run_dir):
                if step > ckpt.step:
                    os.rename(path, path.with_name(f"{path.name}.unreadable"))
            self.event("checkpoint_fallback", ckpt.step, skipped=skipped)
        if ckpt is None and skipped:
            raise CheckpointError(f"no checkpoint of {self.run_dir} can be read: {skipped[-1]}")
        return ckpt

    def save(self, step: int, last_loss: float, elapsed: float) -> Path:
        """Write the checkpoint of `step` (main process); NonFiniteError if any tensor is NaN or infinite."""
        task, accelerator = self.task, self.accelerator
        state: dict[str, Any] = {
            "elapsed_seconds": elapsed, "images_seen": step * self.tc.batch_size, "ema_updates": self.ema.num_updates,
            "rng": rng_state(), "config": task.config, "world_size": accelerator.num_processes,
            "version": __version__, "loss": last_loss, "overhead_seconds": self.overhead, "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks, "skipped_steps": self.skipped_total,
        }
        ema_weights = {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
        bad = nonfinite_tensors({"model": accelerator.unwrap_model(task.model).state_dict(), "ema": ema_weights})
        if bad:  # before the task computes anything from these weights (an autoencoder's latent statistics)
            raise NonFiniteError(f"step {step}: non-finite values in {', '.join(bad[:3])}")
        state.update(task.state_dict(ema_weights))
        extra = {name: (accelerator.unwrap_model(module).state_dict(), opt.state_dict())
                 for name, (module, opt) in task.extra.items()}
        fsync_file(self.metrics_path)
        tensors = {}
        if self.power_emas:
            state["posthoc_ema"] = [{"sigma_rel": e.sigma_rel, "t": e.num_updates} for e in self.power_emas]
            tensors["posthoc_ema"] = {f"{i}/{k}": v for i, e in enumerate(self.power_emas) for k, v in e.shadow.items()}
        path = save_checkpoint(self.run_dir, step, accelerator.unwrap_model(task.model).state_dict(),
                               self.ema.state_dict(), task.optimizer.state_dict(), state, keep=self.tc.keep_checkpoints,
                               extra=extra, tensors=tensors)
        sync_config(self.run_dir, task.config)  # config.json mirrors the newest checkpoint's config
        plot_metrics(self.metrics_path, self.run_dir / "loss.png")
        return path

    def recover(self, step: int, why: str, bar: Any) -> int:
        """The divergence guard's last resort: go back to the newest checkpoint with the learning rate times
        rollback_lr_factor and return its step, or -- out of rollbacks, or with no checkpoint -- stop (exit 3)."""
        tc = self.tc
        newest = list_checkpoints(self.run_dir)
        if self.rollbacks >= tc.max_rollbacks or not newest:
            where = (f"the last good checkpoint {newest[-1][1]} is kept" if newest
                     else "no checkpoint had been written yet")
            self.event("diverged", step, why=why, rollbacks=self.rollbacks)
            raise DivergedError(f"training diverged at step {step} ({why}) after {self.rollbacks} rollback(s); "
                                f"{where}; resume it with a smaller --lr and --allow-change")
        rollbacks, skipped, lr_scale = self.rollbacks, self.skipped_total, self.lr_scale
        ckpt = self.load_newest()
        assert ckpt is not None
        self.rollbacks, self.skipped_total = rollbacks + 1, skipped  # counted across rollbacks, not reset by them
        self.lr_scale = lr_scale * tc.rollback_lr_factor
        if self.main:
            truncate_metrics(self.metrics_path, ckpt.step)
            set_aside_after(self.run_dir, ckpt.step)
        self.say(f"step {step}: {why}; rolled back to step {ckpt.step} with the learning rate x{self.lr_scale:g} "
                 f"(rollback {self.rollbacks} of at most {tc.max_rollbacks})")
        self.event("rollback", step, why=why, to_step=ckpt.step, lr_scale=self.lr_scale)
        bar.reset(total=tc.steps)  # the progress bar goes back with the run
        bar.update(ckpt.step)
        return ckpt.step

    def _train(self) -> TrainResult:
        tc, task, accelerator, run_dir = self.tc, self.task, self.accelerator, self.run_dir
        world, rank, main = accelerator.num_processes, accelerator.process_index, self.main
        local_b = tc.batch_size // world
        self.ema = ema = (EMA(task.model, tc.ema_decay, tc.ema_warmup) if tc.ema_sigma_rel is None
                          else PowerEMA(task.model, tc.ema_sigma_rel))
        self.power_emas = power_emas = [PowerEMA(task.model, s) for s in tc.posthoc_ema]
        start = 0
        if self.resume:
            ckpt = self.load_newest()
            start = ckpt.step if ckpt is not None else 0
            if ckpt is not None:
                self.event("resumed", start, from_checkpoint=ckpt.path.name)
            for change in self.changes:
                self.say(f"config change on resume: {change}")
            if self.changes:
                self.event("config_change", start, changes=[str(c) for c in self.changes])
        if main:
            prepare_run_dir(run_dir, task.config, self.resume, task.files)
            truncate_metrics(self.metrics_path, start)
            set_aside_after(run_dir, start)  # snapshots a killed run wrote after its checkpoint
            if not self.resume:
                self.event("started", 0, version=__version__, mixed_precision=self.precision.mixed_precision,
                           precision_reason=self.precision.reason, threads=torch.get_num_threads(), processes=world)
        tensorboard = TensorBoardLog(run_dir, start) if main and tc.log == "tensorboard" else None
        accelerator.wait_for_everyone()

        task.model, task.optimizer = accelerator.prepare(task.model, task.optimizer)
        for name, (module, opt) in list(task.extra.items()):
            task.extra[name] = accelerator.prepare(module, opt)
        raw_model = accelerator.unwrap_model(task.model)
        ema.shadow = {k: v.to(accelerator.device) for k, v in ema.shadow.items()}
        for average in power_emas:
            average.shadow = {k: v.to(accelerator.device) for k, v in average.shadow.items()}
        stream = BatchStream(task.num_examples, tc.seed)
        optimizers = self._optimizers()

        total = tc.steps if tc.steps is not None else 10**12
        budget = tc.minutes * 60 if tc.minutes is not None else math.inf
        interactive = sys.stderr.isatty() if self.progress is None else self.progress
        bar = tqdm(total=tc.steps, initial=start, desc="train", disable=not (main and interactive), dynamic_ncols=True)
        if main:
            what = f"{tc.steps} steps" if tc.steps is not None else f"{tc.minutes} min"
            print(f"training {task.description} -> {run_dir}  "
                  f"[{what}, batch {tc.batch_size} on {world} process(es), {accelerator.device}, "
                  f"{torch.get_num_threads()} thread(s), {self.precision}]", flush=True)
            if tc.batch_size > task.num_examples:
                print(f"warning: the data has {task.num_examples} images, fewer than the batch of {tc.batch_size}: "
                      f"every batch repeats images; --batch-size {task.num_examples} or fewer trains the same data "
                      "in cheaper steps", file=sys.stderr, flush=True)

        # A second job started on these cores makes a planned thread team drop to the free ones (threads.py).
        watch = thread_watch() if main and world == 1 else None
        t0 = time.perf_counter()
        log_t, log_step, sums, loss_n, last_loss = t0, start, {}, 0, float("nan")
        step, last_ckpt, grid_path, in_a_row, skipped_since_log = start, None, None, 0, 0
        task.model.train()
        for module, _ in task.extra.values():
            module.train()
        while step < total:
            step += 1
            ctx = StepContext(step, generator(tc.seed, STEP_KEY, step), stream.batch(step, tc.batch_size),
                              slice(rank * local_b, (rank + 1) * local_b), accelerator)
            torch.manual_seed(derive_seed(tc.seed, DROPOUT_KEY, step, rank))  # dropout masks
            used = budget_fraction(step, tc.warmup_steps, tc.steps, self.prior_elapsed + time.perf_counter() - t0,
                                   tc.minutes * 60 if tc.minutes is not None else None)
            factor = lr_factor(tc.lr_schedule, step, tc.warmup_steps, used)
            for name, opt in optimizers.items():
                for group in opt.param_groups:
                    group["lr"] = task.base_lr[name] * factor * self.lr_scale
            losses = task.step(ctx)
            lr = task.base_lr["model"] * factor * self.lr_scale
            if ctx.skipped:
                # The divergence guard: the step changed nothing; K in a row and the run rolls back (or stops).
                in_a_row += 1
                self.skipped_total += 1
                skipped_since_log += 1
                if in_a_row == 1:
                    self.say(f"step {step}: non-finite loss or gradient, step skipped "
                             f"(rollback after {tc.nonfinite_patience} in a row)")
                    self.event("nonfinite_step", step)
                if in_a_row >= tc.nonfinite_patience:
                    step = self.recover(step, f"{in_a_row} non-finite steps in a row", bar)
                    in_a_row, sums, loss_n, log_t, log_step = 0, {}, 0, time.perf_counter(), step
                    continue
            else:
                in_a_row = 0
            if task.optimizer not in ctx.skipped:
                ema.update(raw_model)
                for average in power_emas:
                    average.update(raw_model)
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                loss_n += 1

            elapsed = self.prior_elapsed + time.perf_counter() - t0
            interrupted = self.signals.received is not None
            stop = step >= total or elapsed >= budget or interrupted
            if world > 1:  # every process must stop at the same step
                stop = bool(broadcast(torch.tensor([int(stop)], device=accelerator.device))[0])
            if main:
                bar.update(1)
                if step % 10 == 0 and loss_n:
                    bar.set_postfix(loss=f"{sums['loss'] / loss_n:.4f}", lr=f"{lr:.1e}", refresh=False)
            if step % tc.log_every == 0 or stop:
                n = max(loss_n, 1)
                means = {k: float(accelerator.reduce(torch.tensor(v / n, device=accelerator.device), "mean"))
                         for k, v in sums.items()}
                now = time.perf_counter()
                its = (step - log_step) / max(now - log_t, 1e-9)
                left = min((total - step) / its if tc.steps is not None else math.inf, budget - elapsed)
                if main:
                    row = {"step": step, **means, "lr": lr, "it_per_s": its, "images_seen": step * tc.batch_size,
                           "elapsed_s": round(elapsed, 2)}
                    if skipped_since_log:
                        row["skipped_steps"] = skipped_since_log
                    _append_metrics(self.metrics_path, row, step)
                    if tensorboard is not None:
                        tensorboard.scalars(row)
                    if not interactive:
                        of = f"/{tc.steps}" if tc.steps is not None else ""
                        shown = f"loss {means['loss']:.4f}" if "loss" in means else "loss -"
                        others = "".join(f" | {k} {v:.4f}" for k, v in means.items() if k != "loss")
                        skips = f" | {skipped_since_log} skipped" if skipped_since_log else ""
                        print(f"step {step}{of} | {shown}{others}{skips} | {its:.1f} it/s | ETA {format_eta(left)}",
                              flush=True)
                last_loss = means.get("loss", last_loss)
                log_t, log_step, sums, loss_n, skipped_since_log = now, step, {}, 0, 0
            if watch is not None and (change := watch.poll()) is not None:
                before, now_threads, others = change
                self.say(f"step {step}: other processes now keep {others:.1f} core(s) busy: {before} -> {now_threads} "
                         "thread(s)")
                self.event("threads", step, threads=now_threads, was=before, busy_elsewhere=round(others, 2))
            t_over = time.perf_counter()
            if stop and in_a_row and not interrupted:
                newest = list_checkpoints(run_dir)
                kept = f"the last good checkpoint {newest[-1][1]} is kept" if newest else "no checkpoint was written"
                self.event("diverged", step, why=f"ended in {in_a_row} non-finite steps")
                raise DivergedError(f"training ended at step {step} in a streak of {in_a_row} non-finite steps; "
                                    f"{kept}; resume it with a smaller --lr and --allow-change")
            # A checkpoint is a good state: none is written while the last step was not finite.
            checkpoint_now = (step % tc.checkpoint_every == 0 or stop) and not in_a_row
            if main and power_emas and not in_a_row and (step % tc.posthoc_ema_every == 0 or checkpoint_now):
                write_snapshot(run_dir, step, power_emas)  # every checkpoint has one: a reconstruction ends there
            if checkpoint_now:
                try:
                    if main:
                        last_ckpt = self.save(step, last_loss, elapsed)
                    accelerator.wait_for_everyone()
                except NonFiniteError as e:  # never write a diverged state: go back to a good one (or stop)
                    step = self.recover(step, str(e), bar)
                    in_a_row, sums, loss_n, log_t, log_step = 0, {}, 0, time.perf_counter(), step
                    continue
            if interrupted:
                bar.close()
                name = signal.Signals(self.signals.received).name
                if in_a_row:
                    newest = list_checkpoints(run_dir)
                    last_ckpt = newest[-1][1] if newest else None
                    what = (f"no checkpoint written (the last {in_a_row} steps were not finite); the newest good one "
                            f"is {last_ckpt}")
                else:
                    what = f"checkpoint written to {last_ckpt}"
                self.event("interrupted", step, signal=name, checkpoint=str(last_ckpt))
                raise TrainingInterrupted(f"{name} at step {step}: {what}", self.signals.received, step, last_ckpt)
            if main and (step % tc.sample_every == 0 or stop):
                grid_path = task.preview({k: v.detach().cpu() for k, v in ema.state_dict().items()},
                                         run_dir / "samples" / f"step_{step:08d}.png")
                if tensorboard is not None:
                    tensorboard.grid(grid_path, step)
                task.model.train()
            self.overhead += time.perf_counter() - t_over  # checkpoints and preview grids: wall time that trains nothing
            if stop:
                break
        bar.close()
        if tensorboard is not None:
            tensorboard.close()
        elapsed = self.prior_elapsed + time.perf_counter() - t0
        if last_ckpt is None:
            last_ckpt = latest_checkpoint(run_dir)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return TrainResult(run_dir, step, last_loss, elapsed, last_ckpt, grid_path, main, self.skipped_total,
                           self.rollbacks)


def _append_metrics(path: Path, row: dict[str, Any], step: int) -> None:
    """One metrics row; with the fault `metrics:row@STEP` armed, half of it and then SIGKILL (a torn last line)."""
    if armed("metrics:row", step):
        line = json.dumps(row) + "\n"
        with open(path, "a") as f:
            f.write(line[: len(line) // 2])
        maybe_fault("metrics:row", step)
    append_jsonl(path, row)


__all__ = ["DROPOUT_KEY", "INIT_KEY", "STEP_KEY", "StepContext", "TrainResult", "TrainingTask", "format_eta",
           "make_accelerator", "run_training"]
