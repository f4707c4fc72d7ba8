"""The Python API (api.py): what it samples is what the command line samples, for every kind of run; the README's
Python snippet runs as written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusionlab as dl
from diffusionlab.errors import ConfigError

from helpers import TINY, run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dl.Run]:
    """A tiny unconditional and class-conditional digits run, and a tiny VAE, trained through the API."""
    root = tmp_path_factory.mktemp("api")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {
        "uncond": dl.train({**TINY, "train": {**TINY["train"], "steps": 4}}, root / "uncond", progress=False),
        "cond": dl.train({**TINY, "train": {**TINY["train"], "steps": 4, "class_conditional": True}}, root / "cond",
                         progress=False),
        "vae": dl.train({"train": {"steps": 2, "checkpoint_every": 2}, "model": {"base_channels": 8, "latent_dim": 4}},
                        root / "vae", preset="digits-vae", progress=False),
    }
    yield out
    torch.set_num_threads(before)


def _cli_images(*args: str, out: Path) -> np.ndarray:
    res = run_cli("sample", *args, "--out", str(out))
    assert res.returncode == 0, res.stderr
    with np.load(out) as f:
        return f["images"]


def test_train_returns_the_loaded_run(runs: dict[str, dl.Run]):
    run = runs["uncond"]
    assert run.family == "ddpm" and run.step == 4 and run.image_shape == (1, 8, 8) and run.num_classes is None
    assert runs["cond"].num_classes == 10 and runs["vae"].family == "vae"
    assert dl.load_run(run.path).step == 4 and "ddpm" in repr(run)


def test_api_samples_are_the_cli_samples(runs: dict[str, dl.Run], tmp_path: Path):
    images = runs["uncond"].sample(6, sampler="dpmpp2m", steps=3, seed=7)
    assert images.dtype == torch.uint8 and images.shape == (6, 1, 8, 8)
    cli = _cli_images(str(runs["uncond"].path), "--n", "6", "--sampler", "dpmpp2m", "--steps", "3", "--seed", "7",
                      out=tmp_path / "u.npz")
    assert np.array_equal(images[:, 0].numpy(), cli)
    guided = runs["cond"].sample(6, steps=3, classes="all", guidance_scale=2.0, seed=1)
    cli = _cli_images(str(runs["cond"].path), "--n", "6", "--steps", "3", "--class", "all", "--guidance-scale", "2",
                      "--seed", "1", out=tmp_path / "c.npz")
    assert np.array_equal(guided[:, 0].numpy(), cli)
    vae = runs["vae"].sample(5, seed=2)
    assert np.array_equal(vae[:, 0].numpy(), _cli_images(str(runs["vae"].path), "--n", "5", "--seed", "2",
                                                         out=tmp_path / "v.npz"))


def test_defaults_give_images_in_range(runs: dict[str, dl.Run]):
    images = runs["uncond"].sample(4)  # the family's default sampler and steps, x0 clipped like the CLI
    assert images.dtype == torch.uint8 and images.shape == (4, 1, 8, 8)


def test_evaluate_reports_fid_beside_the_floor(runs: dict[str, dl.Run], tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DIFFUSIONLAB_CACHE", str(tmp_path / "cache"))
    report = runs["uncond"].evaluate(n=32, steps=3)
    assert math.isfinite(report["fid"]) and math.isfinite(report["floor"]["fid"]) and report["n_fake"] == 32


@pytest.mark.parametrize("kwargs,message", [
    ({"classes": 3}, "unconditional"),
    ({"prompt": "a three"}, "text run"),
    ({"n": 0}, "n must be"),
])
def test_bad_requests_are_one_line_errors(runs: dict[str, dl.Run], kwargs: dict, message: str):
    kwargs = {"n": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        runs["uncond"].sample(kwargs.pop("n"), **kwargs)
    with pytest.raises(ConfigError, match="0..9"):
        runs["cond"].sample(2, classes=[0, 12])
    with pytest.raises(ConfigError, match="one network pass"):
        runs["vae"].sample(2, steps=10)


def test_the_readme_python_snippet_runs(tmp_path: Path, monkeypatch):
    """Every ```python block of the README's "Python API" section, run as written in a fresh folder."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    section = section[: section.index("\n## ", 3)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFUSIONLAB_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "api-digits" / "grid.png").is_file()


def test_sampling_shows_progress_in_steps_over_all_batches(runs: dict[str, dl.Run], capsys, monkeypatch):
    import importlib

    generate_module = importlib.import_module("diffusionlab.sampling.generate")  # the module, not the function
    monkeypatch.setattr(generate_module, "PROGRESS_DELAY", 0.0)  # a tiny model finishes before the usual delay
    runs["uncond"].sample(6, sampler="ddim", steps=3, batch_size=4, progress=True)  # 2 batches x 3 steps
    err = capsys.readouterr().err
    assert "sampling" in err and "6/6" in err
