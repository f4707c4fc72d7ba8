"""A run's recommended sampler (config sample.recommended_sampler / recommended_steps, set by a preset from
measurement): what `sample`, `evaluate`, the API and the playground draw with when no sampler is asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusionlab as dl
from diffusionlab.training.config import RunConfig, merge_config, preset_config

from helpers import TINY, run_cli

RECOMMENDED = {**TINY, "train": {**TINY["train"], "steps": 4},
               "sample": {**TINY["sample"], "recommended_sampler": "dpmpp2m", "recommended_steps": 3}}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dl.Run:
    """A tiny digits DDPM run whose config recommends DPM-Solver++(2M) at 3 steps."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield dl.train(RECOMMENDED, tmp_path_factory.mktemp("recommended") / "run", progress=False)
    torch.set_num_threads(before)


def test_the_mnist_preset_recommends_the_sampler_it_was_measured_with():
    # BENCHMARKS.md, "narrow networks with native bf16": FID 5.88 with DPM-Solver++ at 10 steps against 7.87 DDIM-50.
    cfg = RunConfig.from_dict(preset_config("mnist"))
    assert cfg.sample.recommended() == ("dpmpp2m", 10)
    assert (cfg.sample.sampler, cfg.sample.steps) == ("ddim", 50)  # the training-time grids keep DDIM-50
    for name in ("digits", "folder32", "mnist-sr2", "mnist14", "mnist-flow", "mnist-ncsn"):  # none was measured
        assert RunConfig.from_dict(preset_config(name)).sample.recommended() is None, name
    # Measured on that network and family: a layer that changes either drops it, any other layer keeps it.
    for layer in ({"process": {"method": "flow"}}, {"model": {"network": "dit"}}):
        assert RunConfig.from_dict(merge_config(preset_config("mnist"), layer)).sample.recommended() is None, layer
    wider = RunConfig.from_dict(merge_config(preset_config("mnist"), {"model": {"base_channels": 32}}))
    assert wider.sample.recommended() == ("dpmpp2m", 10)


def test_the_api_draws_with_the_recommended_sampler_unless_asked_for_another(run: dl.Run):
    assert run.loaded.sampler_and_steps() == ("dpmpp2m", 3)
    images = run.sample(4, seed=5)
    assert run.last_nfe == 3  # DPM-Solver++(2M): one network evaluation per step
    assert torch.equal(images, run.sample(4, sampler="dpmpp2m", steps=3, seed=5))
    run.sample(2, steps=2, seed=5)  # steps alone: the recommended sampler with that many
    assert run.last_nfe == 2 and run.loaded.sampler_and_steps(steps=2) == ("dpmpp2m", 2)
    # Another sampler gets the family's step count for it, not the recommended sampler's.
    assert run.loaded.sampler_and_steps("ddim") == ("ddim", run.loaded.process.default_steps("ddim")) == ("ddim", 50)
    assert run.loaded.sampler_and_steps("dpmpp2m") == ("dpmpp2m", run.loaded.process.default_steps("dpmpp2m"))


def test_sample_and_evaluate_default_to_it_and_say_so(run: dl.Run, tmp_path: Path):
    out = tmp_path / "s.npz"
    res = run_cli("sample", str(run.path), "--n", "4", "--seed", "5", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "dpmpp2m" in res.stdout, res.stdout
    with np.load(out) as f:
        assert np.array_equal(f["images"], run.sample(4, seed=5)[:, 0].numpy())
    report = tmp_path / "eval.json"
    res = run_cli("evaluate", str(run.path), "--fid", "--n", "16", "--json", str(report), timeout=600)
    assert res.returncode == 0, res.stderr
    text = report.read_text()
    assert "dpmpp2m" in text and "ddim" not in text, text[:500]


def test_the_playground_offers_it_first(run: dl.Run):
    from diffusionlab.serve.app import JobRequest, Playground, Served

    info = Served("r", run).info()
    assert info["default_sampler"] == "dpmpp2m" and info["default_steps"]["dpmpp2m"] == 3
    assert info["default_steps"]["ddim"] == 50  # the family's own count for every other sampler
    _, kw = Playground({"r": run}).check(JobRequest(run="r"))
    assert (kw["sampler"], kw["steps"]) == ("dpmpp2m", 3)
    _, kw = Playground({"r": run}).check(JobRequest(run="r", sampler="ddim"))
    assert (kw["sampler"], kw["steps"]) == ("ddim", 50)


@pytest.mark.parametrize("sample,words", [
    ({"recommended_sampler": "dpm"}, "sample.recommended_sampler must be one of"),
    ({"recommended_steps": 10}, "recommended_steps needs sample.recommended_sampler"),
    ({"recommended_sampler": "ddim", "recommended_steps": 500}, "more than the model's T = 100"),
    ({"recommended_sampler": "ode-euler"}, "needs a continuous-time path"),
    ({"sampler": "ode-heun"}, "sample.sampler: sampler ode-heun integrates"),
    ({"recommended_sampler": "dpmpp2m", "recommended_steps": 0}, "recommended_steps must be"),
    ({"recommended_sampler": "dpmpp2m", "recommended_steps": float("nan")}, "recommended_steps must be"),
])
def test_a_bad_recommendation_is_one_line_and_exit_2(sample: dict, words: str, tmp_path: Path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**TINY, "sample": {**TINY["sample"], **sample}}))
    res = run_cli("train", "--config", str(config), "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and words in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "r").exists()
