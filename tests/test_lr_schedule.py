"""The learning-rate schedule: warm-up then constant, cosine or linear decay to 0 over the budget (the formula, the
lr the trainer logs at every step, a bit-exact resume after a kill, bad values)."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusionlab.training.lr_schedule import budget_fraction, lr_factor
from helpers import run_cli


def test_the_factor_is_warmup_times_the_decay():
    assert lr_factor("constant", 5, 10, 0.7) == 0.5
    assert lr_factor("cosine", 20, 10, 0.0) == 1.0
    assert lr_factor("cosine", 20, 10, 0.5) == pytest.approx(0.5)
    assert lr_factor("cosine", 20, 10, 1.0) == pytest.approx(0.0, abs=1e-15)
    assert lr_factor("linear", 20, 10, 0.25) == 0.75
    assert lr_factor("linear", 3, 4, 0.5) == 0.375  # still warming up: 3/4 of the decayed rate


def test_the_budget_fraction_counts_steps_after_warmup_or_the_clock_whichever_ends_first():
    assert budget_fraction(10, 10, 110, 0.0, None) == 0.0
    assert budget_fraction(60, 10, 110, 0.0, None) == 0.5
    assert budget_fraction(500, 10, 110, 0.0, None) == 1.0
    assert budget_fraction(3, 10, 110, 0.0, None) == 0.0  # before warm-up ends, no decay yet
    assert budget_fraction(60, 10, None, 30.0, 120.0) == 0.25
    assert budget_fraction(60, 10, 110, 90.0, 120.0) == 0.75  # the clock is ahead of the steps
    assert budget_fraction(7, 0, None, 0.0, None) == 0.0


def test_the_trainer_logs_the_scheduled_lr_at_every_step(tmp_path: Path, tiny_config: Path):
    for schedule in ("cosine", "linear"):
        run = tmp_path / schedule
        r = run_cli("train", "--config", str(tiny_config), "--out", str(run), "--steps", "10", "--log-every", "1",
                    "--warmup-steps", "2", "--lr", "1e-3", "--lr-schedule", schedule)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [x["step"] for x in rows] == list(range(1, 11))
        for x in rows:
            s = x["step"]
            f = max(0.0, (s - 2) / 8)
            decay = 0.5 * (1 + math.cos(math.pi * f)) if schedule == "cosine" else 1 - f
            assert x["lr"] == pytest.approx(1e-3 * min(1.0, s / 2) * decay, rel=1e-12, abs=1e-18), (schedule, s)
        assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-18)
        assert json.loads((run / "config.json").read_text())["train"]["lr_schedule"] == schedule


def test_a_killed_cosine_run_resumes_bit_exactly(tmp_path: Path, tiny_config: Path):
    common = ["--config", str(tiny_config), "--steps", "8", "--lr-schedule", "cosine"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli("train", *common, "--out", str(full)).returncode == 0
    proc = run_cli("train", *common, "--out", str(killed), env={"DIFFUSIONLAB_FAULT": "checkpoint:renamed@4"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    resumed = run_cli("train", "--resume", "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(full / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        b = load_file(str(killed / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_bad_schedule_is_one_line(tmp_path: Path, tiny_config: Path):
    r = run_cli("train", "--config", str(tiny_config), "--out", str(tmp_path / "x"), "--steps", "2",
                "--lr-schedule", "exponential")
    assert r.returncode == 2 and "lr_schedule" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()
