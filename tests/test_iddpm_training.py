"""Improved DDPM end to end: learned-variance training (hybrid and L_vlb with importance sampling),
exact resume of the importance sampler, strided sampling and `evaluate --nll` through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from diffusionlab.runs import load_run
from diffusionlab.training.checkpoint import load_checkpoint
from diffusionlab.training.config import RunConfig, deep_update, preset_config
from diffusionlab.training.trainer import train

from helpers import TINY, run_cli


def _cfg(steps: int, process: dict, **train_kw) -> RunConfig:
    d = deep_update(preset_config("digits"), deep_update(TINY, {"process": process, "train": {"steps": steps, **train_kw}}))
    return RunConfig.from_dict(d)


def test_vlb_importance_sampling_resumes_bit_for_bit(tmp_path: Path) -> None:
    """T = 10 and batch 16: the sampler's history (10 per term) fills by step 7, so the resumed half draws t
    from the learned p_t; model, EMA and the sampler's history must match an uninterrupted run exactly."""
    proc = {"T": 10, "variance": "learned", "loss": "vlb"}
    train(_cfg(16, proc, checkpoint_every=8), tmp_path / "full", progress=False)
    train(_cfg(8, proc, checkpoint_every=8), tmp_path / "split", progress=False)
    train(_cfg(16, proc, checkpoint_every=8), tmp_path / "split", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "step_00000016")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_00000016")
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]) and torch.equal(a.ema[k], b.ema[k]), k
    sa, sb = a.state["timestep_sampler"], b.state["timestep_sampler"]
    assert sa == sb and min(sa["counts"][1:]) >= 10  # warmed up: t was importance-sampled after step ~7
    # The network emits 2C channels: eps and the variance interpolation v.
    assert a.model["out_conv.weight"].shape[0] == 2


def test_hybrid_training_then_bound_and_strided_sampling(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = train(_cfg(40, {"T": 100, "variance": "learned", "loss": "hybrid"}, lr=3e-3, log_every=10), run, progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(res.loss) and res.loss < rows[0]["loss"]
    loaded = load_run(run)
    assert loaded.process.learned_variance and loaded.denoiser.learned_variance

    out = run_cli("evaluate", str(run), "--nll", "--nll-n", "32", "--nll-steps", "20", "--json", str(tmp_path / "nll.json"))
    assert out.returncode == 0, out.stderr
    assert "bits/dim" in out.stdout and "L_T" in out.stdout and "NFE 20 per image" in out.stdout
    rep = json.loads((tmp_path / "nll.json").read_text())["nll"]
    assert rep["n_images"] == 32 and rep["steps"] == 20 and rep["variance"] == "learned"
    assert abs(rep["prior_bpd"] + rep["diffusion_bpd"] + rep["decoder_bpd"] - rep["bits_per_dim"]) < 1e-9
    # 8 bits/dim is the cost of uniform pixels; a 40-step model of digits is well above the data's entropy.
    assert 0.5 < rep["bits_per_dim"] < 12 and len(rep["per_step_bpd"]) == 20

    out = run_cli("sample", str(run), "--sampler", "ddpm", "--steps", "10", "--n", "8", "--out", str(tmp_path / "s.npz"))
    assert out.returncode == 0, out.stderr
    assert "NFE 10 per sample" in out.stdout


def test_learned_variance_options_give_clear_errors(tmp_path: Path, tiny_config: Path) -> None:
    out = run_cli("train", "--config", str(tiny_config), "--out", str(tmp_path / "a"), "--steps", "2", "--loss", "hybrid")
    assert out.returncode == 2 and "hybrid" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = run_cli("train", "--config", str(tiny_config), "--out", str(tmp_path / "b"), "--steps", "2")
    assert out.returncode == 0, out.stderr
    out = run_cli("sample", str(tmp_path / "b"), "--sampler", "ddpm", "--variance", "learned", "--n", "2", "--steps", "3")
    assert out.returncode == 2 and "learned" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = run_cli("evaluate", str(tmp_path / "b"))
    assert out.returncode == 2 and "--nll" in out.stderr
