"""Mixed precision (training/precision.py): what `auto` resolves to, that config.json stores the choice, and that a
bf16 run trains, samples and resumes bit-exactly within bf16."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusionlab.errors import ConfigError
from diffusionlab.training.precision import ENV, cpu_bf16_flags, resolve_mixed_precision

from helpers import run_cli, train_straight_and_resumed


@pytest.mark.parametrize("requested,device,flags,expected", [
    ("auto", "cpu", ("avx512_bf16",), "bf16"),  # AMD Zen 4, Intel Cooper Lake
    ("auto", "cpu", ("amx_bf16",), "bf16"),  # Intel Sapphire Rapids
    ("auto", "cpu", (), "no"),  # AVX2 only: bf16 would be emulated, slower than float32
    ("auto", "mps", (), "no"),
    ("no", "cpu", ("avx512_bf16",), "no"),  # an explicit choice is kept
    ("bf16", "cpu", (), "bf16"),
])
def test_auto_resolves_to_the_documented_choice(requested, device, flags, expected, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    choice = resolve_mixed_precision(requested, device, flags)
    assert choice.mixed_precision == expected
    assert ("auto" in choice.reason) == (requested == "auto")


def test_environment_overrides_auto_only(monkeypatch):
    monkeypatch.setenv(ENV, "bf16")
    assert resolve_mixed_precision("auto", "cpu", ()).mixed_precision == "bf16"
    assert resolve_mixed_precision("no", "cpu", ()).mixed_precision == "no"
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(ConfigError, match=ENV):
        resolve_mixed_precision("auto", "cpu", ())


def test_fp16_needs_a_gpu(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_mixed_precision("fp16", "cpu", ("avx512_bf16",))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_bf16_flags(info) == ("avx512_bf16",)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_bf16_flags(info) == ()
    assert cpu_bf16_flags(tmp_path / "missing") == ()


def test_auto_is_resolved_and_stored_in_config_json(tiny_config: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)  # the suite pins float32 (conftest.py); here auto decides
    run = tmp_path / "run"
    res = run_cli("train", "--config", str(tiny_config), "--steps", "2", "--out", str(run), env={ENV: ""})
    assert res.returncode == 0, res.stderr
    expected = resolve_mixed_precision("auto", "cpu", cpu_bf16_flags())
    stored = json.loads((run / "config.json").read_text())["train"]["mixed_precision"]
    assert stored == expected.mixed_precision != "auto"  # the choice, never the request
    started = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()][0]
    assert started["mixed_precision"] == stored and started["precision_reason"] == expected.reason
    assert expected.reason in res.stdout  # said at the start of training


def test_a_bf16_run_trains_samples_and_resumes_bit_exactly(tiny_config: Path, tmp_path: Path):
    common = ["--config", str(tiny_config), "--mixed-precision", "bf16", "--checkpoint-every", "3"]
    straight = train_straight_and_resumed(common, tmp_path / "full", tmp_path / "split", steps=6)
    assert "bf16 autocast (set in the config or on the command line)" in straight.stdout
    assert json.loads((tmp_path / "split" / "config.json").read_text())["train"]["mixed_precision"] == "bf16"
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}.npz"
        res = run_cli("sample", str(tmp_path / "full"), "--n", "4", "--steps", "3", "--seed", "5", "--out", str(out))
        assert res.returncode == 0, res.stderr
        outs.append(np.load(out)["images"])
    assert np.isfinite(outs[0]).all() and np.array_equal(outs[0], outs[1])
    # bf16 is a different numeric path: the same seed in float32 gives a different model.
    fp32 = run_cli("train", "--config", str(tiny_config), "--mixed-precision", "no", "--steps", "6",
                   "--out", str(tmp_path / "fp32"))
    assert fp32.returncode == 0, fp32.stderr
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "checkpoints" / "step_00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "fp32" / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in a.values())  # weights stay float32 under autocast
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 0


def test_sampling_in_bf16_is_deterministic_and_close_to_float32(tiny_config: Path, tmp_path: Path):
    from diffusionlab.runs import load_run

    run = tmp_path / "run"
    assert run_cli("train", "--config", str(tiny_config), "--steps", "4", "--out", str(run)).returncode == 0
    fp32, bf16 = load_run(run), load_run(run, mixed_precision="bf16")
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(32, 1, 8, 8, generator=g), torch.randint(1, 101, (32,), generator=g).float()
    with torch.no_grad():
        a, b = fp32.denoiser(x, t), bf16.denoiser(x, t)
    assert b.x0.dtype == torch.float32  # the sampler's arithmetic stays in float32
    gap = ((a.x0 - b.x0).norm() / a.x0.norm()).item()
    assert 0 < gap < 2e-2, gap  # bf16 keeps 8 bits of mantissa: relative errors of a few 1e-3 per layer
    images = []
    for i in range(2):
        out = tmp_path / f"bf16-{i}.npz"
        res = run_cli("sample", str(run), "--n", "8", "--steps", "5", "--seed", "3", "--mixed-precision", "bf16",
                      "--out", str(out))
        assert res.returncode == 0, res.stderr
        images.append(np.load(out)["images"])
    assert np.array_equal(images[0], images[1])  # the same seed, the same images
