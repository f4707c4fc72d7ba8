"""Tiny end-to-end runs of every model family: train through the CLI, then sample; exact resume of a flow run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusionlab.cli import main
from diffusionlab.data import load_dataset, to_model_range
from diffusionlab.models import build_network
from diffusionlab.runs import LoadedRun, load_run
from diffusionlab.sampling import SamplerOptions, generate
from diffusionlab.training.config import RunConfig, deep_update, preset_config
from diffusionlab.training.determinism import derive_seed
from diffusionlab.training.trainer import INIT_KEY, train

from helpers import TINY_NET

FAMILIES = ("flow", "ncsn", "vpsde", "vesde")


def held_out_loss(run: LoadedRun, net: torch.nn.Module, x0: torch.Tensor) -> float:
    """Mean loss of `net` on fixed data and fixed noise draws (not the training ones)."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        return float(torch.stack([run.process.loss(net, x0, *run.process.draw(tuple(x0.shape), g)).mean()
                                  for _ in range(4)]).mean())


def initial_network(run: LoadedRun) -> torch.nn.Module:
    """The run's weights before its first step (the trainer seeds the initialisation from the run's seed)."""
    torch.manual_seed(derive_seed(run.config.train.seed, INIT_KEY))
    return build_network(run.config.model).eval()


@pytest.mark.parametrize("method", FAMILIES)
def test_family_trains_through_the_cli_and_samples(method: str, tmp_path: Path, tiny_net_config: Path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--preset", f"digits-{method}", "--config", str(tiny_net_config), "--steps", "40",
                 "--lr", "3e-3", "--checkpoint-every", "40", "--out", str(run_dir), "--progress", "lines"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["process"]["method"] == method and cfg["model"]["time_scale"] == 1000.0
    assert (run_dir / "samples" / "step_00000040.png").exists()  # the training-time grid (DDIM on the path)

    # Learning, measured on held-out noise draws: the loss after 40 steps is well below the loss at initialisation.
    run = load_run(run_dir, use_ema=False)
    x0 = to_model_range(load_dataset("digits", None, "all", None, None).images[:256])
    before, after = held_out_loss(run, initial_network(run), x0), held_out_loss(run, run.net, x0)
    assert after < 0.7 * before, (before, after)

    res = generate(run.denoiser, run.process, run.model_shape, 16, "ddim", 10, options=SamplerOptions(clip_x0=False), seed=3)
    assert res.images.shape == (16, 1, 8, 8) and torch.isfinite(res.images).all() and res.nfe == 10
    again = generate(run.denoiser, run.process, run.model_shape, 16, "ddim", 10, options=SamplerOptions(clip_x0=False), seed=3)
    assert torch.equal(res.images, again.images)  # same seed, same numbers

    # The family's own sampler through the CLI, cheap: 3 steps (ode-euler, heun, pc; langevin on 3 levels of 2 steps).
    out = tmp_path / "s.npz"
    assert main(["sample", str(run_dir), "--n", "8", "--steps", "3", "--corrector-steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert run.process.default_sampler in printed, printed
    assert np.load(out)["images"].shape == (8, 8, 8)
    # The variational bound is DDPM's: a one-line error that points to the ODE NLL.
    assert main(["evaluate", str(run_dir), "--nll", "--nll-n", "4"]) == 2
    err = capsys.readouterr().err
    assert "--nll --ode" in err and err.count("\n") == 1, err


def test_cli_rejects_bad_method_settings_in_one_line(tmp_path: Path, capsys):
    for args, message in ((["--method", "vqvae"], "invalid choice: 'vqvae'"),
                          (["--method", "flow", "--beta-min", "0.2"], "beta_min is a setting of vpsde"),
                          (["--method", "flow", "--prediction", "v"], "prediction is a setting of ddpm, not of method flow"),
                          (["--method", "vpsde", "--beta-max", "nan"], "beta_max must be a finite number"),
                          (["--method", "vesde", "--sigma-max", "0.001"], "sigma_min < sigma_max")):
        code = main(["train", *args, "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "run").exists()  # refused before anything is written


def _tiny_flow(steps: int) -> RunConfig:
    return RunConfig.from_dict(deep_update(preset_config("digits-flow"), deep_update(TINY_NET, {"train": {"steps": steps}})))


def test_resumed_flow_run_matches_uninterrupted_run_bit_for_bit(tmp_path: Path):
    train(_tiny_flow(8), tmp_path / "full", progress=False)
    train(_tiny_flow(4), tmp_path / "split", progress=False)
    train(_tiny_flow(8), tmp_path / "split", resume=True, progress=False)
    a = load_run(tmp_path / "full", tmp_path / "full" / "checkpoints" / "step_00000008", use_ema=False)
    b = load_run(tmp_path / "split", tmp_path / "split" / "checkpoints" / "step_00000008", use_ema=False)
    for (k, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(va, vb), f"{k} differs after resume"
    ea, eb = load_run(tmp_path / "full").net.state_dict(), load_run(tmp_path / "split").net.state_dict()
    assert all(torch.equal(ea[k], eb[k]) for k in ea)  # the EMA too
