"""Shared test helpers: a tiny model config (end-to-end runs in seconds on 2 cores) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY = {
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4],
              "num_heads": 1, "groups": 8},
    "process": {"T": 100},
    "train": {"batch_size": 16, "log_every": 2, "checkpoint_every": 4, "sample_every": 1000, "warmup_steps": 2,
              "keep_checkpoints": 100},
    "sample": {"n": 4, "steps": 3},
}
# TINY without its process section (T = 100 is a DDPM setting): for the other families.
TINY_NET = {k: v for k, v in TINY.items() if k != "process"}


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m diffusionlab.cli ARGS` in a subprocess with one thread (CI has 2 cores)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("DIFFUSIONLAB_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "diffusionlab.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def record_training_conditions(monkeypatch) -> list:
    """Wrap every network the trainer builds so that the y of each training forward pass (not the preview grid's) is
    appended to the returned list: what the model was conditioned on, observed where it is used."""
    import diffusionlab.training.diffusion as task_module

    seen: list = []
    real_build = task_module.build_network

    def recording_build(model_cfg: dict):
        net = real_build(model_cfg)
        forward = net.forward

        def spy(x, t, y=None):
            if net.training:
                seen.append(y.detach().cpu().clone())
            return forward(x, t, y)

        net.forward = spy
        return net

    monkeypatch.setattr(task_module, "build_network", recording_build)
    return seen


def train_straight_and_resumed(common: list[str], full: Path, split: Path, steps: int = 6) -> subprocess.CompletedProcess:
    """Train `steps` steps in one go (into `full`) and in two halves with --resume (into `split`); assert that the
    final model, EMA and optimizer tensors are identical, bit for bit. Returns the straight run's process."""
    import torch
    from safetensors.torch import load_file

    straight = run_cli("train", *common, "--steps", str(steps), "--out", str(full))
    assert straight.returncode == 0, straight.stderr
    half = run_cli("train", *common, "--steps", str(steps // 2), "--out", str(split))
    assert half.returncode == 0, half.stderr
    resumed = run_cli("train", "--resume", "--steps", str(steps), "--out", str(split))
    assert resumed.returncode == 0, resumed.stderr
    last = f"step_{steps:08d}"
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(full / "checkpoints" / last / f"{name}.safetensors"))
        b = load_file(str(split / "checkpoints" / last / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    return straight
