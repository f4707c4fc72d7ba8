"""The command line end to end: train -> checkpoint -> kill -9 -> resume -> sample, and clean errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import run_cli


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_clean_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny run shared by the sampling tests."""
    from helpers import TINY

    root = tmp_path_factory.mktemp("run")
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    proc = run_cli("train", "--config", str(cfg), "--steps", "8", "--out", str(root / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "run directory:" in proc.stdout and "sample grid:" in proc.stdout
    return root / "run"


def test_train_writes_a_complete_run_directory(trained_run: Path):
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["model"]["image_size"] == 8 and cfg["model"]["in_channels"] == 1
    ckpt = trained_run / "checkpoints" / "step_00000008"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json"}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 8 and "torch" in state["rng"] and state["config"]["train"]["steps"] == 8
    rows = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8] and all(np.isfinite(r["loss"]) for r in rows)
    assert (trained_run / "samples" / "step_00000008.png").exists()


@pytest.mark.parametrize("sampler,extra", [("ddim", ["--steps", "5"]), ("ddpm", []), ("ddim", ["--steps", "4", "--eta", "1"])])
def test_sample_writes_npz_and_grid(trained_run: Path, tmp_path: Path, sampler: str, extra: list[str]):
    out = tmp_path / "s.npz"
    proc = run_cli("sample", str(trained_run), "--n", "6", "--sampler", sampler, *extra, "--seed", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out, allow_pickle=False) as f:
        images = f["images"]
    assert images.dtype == np.uint8 and images.shape == (6, 8, 8)  # N x H x W for one channel
    assert Image.open(out.with_suffix(".png")).size[0] > 8
    nfe = 100 if sampler == "ddpm" else int(extra[1])
    assert f"NFE {nfe} per sample" in proc.stdout


@pytest.mark.parametrize("sampler,steps,nfe,grid", [("heun", 4, 7, "karras"), ("dpmpp2m", 4, 4, "time"),
                                                    ("dpmpp2m-sde", 4, 4, "time"), ("dpmpp2m-sde", 4, 4, "karras"),
                                                    ("euler", 3, 3, "loguniform"), ("sde", 3, 3, "karras"),
                                                    ("pc", 3, 6, "karras")])
def test_sample_with_sigma_space_samplers(trained_run: Path, tmp_path: Path, sampler: str, steps: int, nfe: int,
                                          grid: str):
    """A DDPM run sampled through the sigma-space adapter on each grid; the NFE line is exact (Heun 2N - 1, pc N (M + 1))."""
    out = tmp_path / "s.npz"
    proc = run_cli("sample", str(trained_run), "--n", "4", "--sampler", sampler, "--steps", str(steps),
                   "--sigma-spacing", grid, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out, allow_pickle=False) as f:
        images = f["images"]
    assert images.dtype == np.uint8 and images.shape == (4, 8, 8)
    assert f"{sampler} {steps} steps, NFE {nfe} per sample" in proc.stdout


def test_ode_sampler_on_a_ddpm_run_is_a_one_line_error(trained_run: Path, tmp_path: Path):
    _assert_clean_error(run_cli("sample", str(trained_run), "--sampler", "ode-rk4", "--steps", "3",
                                "--out", str(tmp_path / "o.npz")), "continuous-time path")


def test_evaluate_nll_by_the_probability_flow_ode(trained_run: Path, tmp_path: Path):
    """`evaluate --nll --ode`: bits/dim, image count and NFE printed (Heun: 2 per step), the report in JSON."""
    report = tmp_path / "ode.json"
    proc = run_cli("evaluate", str(trained_run), "--nll", "--ode", "--nll-n", "6", "--ode-steps", "4", "--ode-method",
                   "heun", "--seed", "1", "--json", str(report))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())["nll_ode"]
    assert r["n_images"] == 6 and r["nfe_per_image"] == 8 and r["divergence"] == "hutchinson"
    assert np.isfinite(r["bits_per_dim"]) and r["bits_per_dim"] > 0 and r["std_error"] > 0
    assert f"{r['bits_per_dim']:.4f}" in proc.stdout and "NFE 8 per image" in proc.stdout
    _assert_clean_error(run_cli("evaluate", str(trained_run), "--fid", "--ode"), "--ode goes with --nll")


def test_sampling_is_reproducible_and_trajectory_is_animated(trained_run: Path, tmp_path: Path):
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    for out, seed in ((a, "1"), (b, "1"), (c, "2")):
        proc = run_cli("sample", str(trained_run), "--n", "4", "--steps", "6", "--seed", seed, "--out", str(out), "--trajectory")
        assert proc.returncode == 0, proc.stderr
    load = lambda p: np.load(p, allow_pickle=False)["images"]  # noqa: E731
    assert np.array_equal(load(a), load(b))
    assert not np.array_equal(load(a), load(c))
    gif = Image.open(a.with_suffix(".gif"))
    assert gif.n_frames >= 6  # one frame per step (+ a hold at the end)


def test_kill9_then_resume_equals_uninterrupted_run(tiny_config: Path, tmp_path: Path):
    steps = "120"
    common = ["--config", str(tiny_config), "--steps", steps, "--checkpoint-every", "5", "--log-every", "5"]
    full = run_cli("train", *common, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "diffusionlab.cli", "train", *common, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step_00000010").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: the worst case
    proc.wait()
    assert not (killed / "checkpoints" / f"step_{int(steps):08d}").exists(), "run finished before the kill"

    resumed = run_cli("train", "--resume", "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(tmp_path / "full" / "checkpoints" / f"step_{int(steps):08d}" / f"{name}.safetensors"))
        b = load_file(str(killed / "checkpoints" / f"step_{int(steps):08d}" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after kill -9 and resume"
    steps_logged = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(5, int(steps) + 1, 5))


def test_bad_arguments_give_one_line_errors(tmp_path: Path, trained_run: Path):
    _assert_clean_error(run_cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nope"), "--steps", "1",
                                "--out", str(tmp_path / "r1")), "nope")
    (tmp_path / "empty").mkdir()
    _assert_clean_error(run_cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"), "--steps", "1",
                                "--out", str(tmp_path / "r1")), "train-images-idx3-ubyte")
    assert not (tmp_path / "r1").exists()  # nothing is created for a run that cannot start
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"this is not a zip file")
    _assert_clean_error(run_cli("train", "--dataset", "npz", "--data-dir", str(bad_npz), "--steps", "1",
                                "--out", str(tmp_path / "r2")), "bad.npz")
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text("{oops")
    _assert_clean_error(run_cli("train", "--config", str(bad_cfg)), "bad.json")
    typo_cfg = tmp_path / "typo.json"
    typo_cfg.write_text(json.dumps({"train": {"bacth_size": 4}}))
    _assert_clean_error(run_cli("train", "--config", str(typo_cfg)), "bacth_size")
    _assert_clean_error(run_cli("train", "--resume", "--out", str(tmp_path / "missing")), "missing")
    _assert_clean_error(run_cli("train", "--resume", "--out", str(trained_run), "--lr", "1"), "lr")
    _assert_clean_error(run_cli("sample", str(tmp_path / "missing")), "missing")
    _assert_clean_error(run_cli("sample", str(trained_run), "--steps", "1000"), "T = 100")
    _assert_clean_error(run_cli("sample", str(trained_run), "--eta", "2"), "eta")
    _assert_clean_error(run_cli("sample", str(trained_run), "--out", str(tmp_path / "x.png")), ".npz")
    _assert_clean_error(run_cli("classify", str(tmp_path / "none.npz")), "none.npz")
    # argparse's own errors: usage line + error line, exit 2, no traceback
    proc = run_cli("train", "--preset", "imagenet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "invalid choice" in proc.stderr
    proc = run_cli("sample", str(trained_run), "--n", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_failures_never_damage_an_earlier_run(trained_run: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    before = _digest(run)
    # 1. training into an existing run without --resume is refused, and touches nothing
    _assert_clean_error(run_cli("train", "--preset", "digits", "--steps", "1", "--out", str(run)), "--resume")
    assert _digest(run) == before
    # 2. a corrupt checkpoint is named in a one-line error and left as it is (nothing is overwritten)
    ema = run / "checkpoints" / "step_00000008" / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:100])
    corrupted = _digest(run)
    _assert_clean_error(run_cli("sample", str(run), "--n", "2"), "ema.safetensors")
    assert _digest(run) == corrupted
    # 3. an earlier, intact checkpoint is still usable explicitly
    earlier = run / "checkpoints" / "step_00000004"
    proc = run_cli("sample", str(run), "--n", "2", "--steps", "2", "--checkpoint", str(earlier), "--out", str(tmp_path / "e.npz"))
    assert proc.returncode == 0, proc.stderr
    # 4. --resume falls back to the checkpoint before the damaged one, says so, and keeps the damaged one aside
    proc = run_cli("train", "--resume", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "step_00000008 is unreadable" in proc.stderr and "falling back" in proc.stderr
    kept = run / "checkpoints" / "step_00000008.unreadable" / "ema.safetensors"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == corrupted["checkpoints/step_00000008/ema.safetensors"]
    assert (run / "checkpoints" / "step_00000008" / "ema.safetensors").stat().st_size > 100  # trained again


def test_classify_reports_real_digits_as_all_ten_classes(tmp_path: Path):
    from sklearn.datasets import load_digits

    d = load_digits()
    real = np.round(d.images[-200:] * 255 / 16).astype(np.uint8)  # held-out-ish real digits
    np.savez(tmp_path / "real.npz", images=real)
    noise = np.random.default_rng(0).integers(0, 256, (200, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise)
    real_rep = json.loads(run_cli("classify", str(tmp_path / "real.npz"), "--json").stdout)
    noise_rep = json.loads(run_cli("classify", str(tmp_path / "noise.npz"), "--json").stdout)
    assert real_rep["classes_found"] == 10 and real_rep["confident_fraction"] > 0.9
    assert noise_rep["confident_fraction"] < 0.05  # the judge is not fooled by noise (measured 0%)


def test_resume_with_steps_replaces_a_minutes_budget(tmp_path: Path):
    """A run trained for N minutes and resumed with --steps K trains to step K (it used to stop at once)."""
    from diffusionlab.cli import build_parser, config_for_train
    from diffusionlab.training.config import RunConfig, deep_update, preset_config

    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig.from_dict(deep_update(preset_config("digits"), {"train": {"steps": None, "minutes": 20.0}}))
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    resumed, _, is_resume = config_for_train(build_parser().parse_args(["train", "--resume", "--out", str(run), "--steps", "5"]))
    assert is_resume and resumed.train.steps == 5 and resumed.train.minutes is None
    back, _, _ = config_for_train(build_parser().parse_args(["train", "--resume", "--out", str(run), "--minutes", "3"]))
    assert back.train.minutes == 3.0 and back.train.steps is None
