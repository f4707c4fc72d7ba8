"""Latent diffusion (Rombach et al. 2022; docs/maths.md section 7): the codecs, the KL autoencoder and its training, and
diffusion models trained, resumed, sampled and evaluated in its latent space, with one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusionlab.cli import main
from diffusionlab.codecs import PixelCodec, build_codec
from diffusionlab.data import load_dataset, to_model_range
from diffusionlab.errors import ConfigError
from diffusionlab.models.autoencoder import AutoencoderConfig, AutoencoderKL, DiagonalGaussian
from diffusionlab.runs import load_run
from diffusionlab.sampling import SAMPLER_NAMES, SamplerOptions, generate
from diffusionlab.training.autoencoder import adaptive_weight, hinge_d_loss, latent_statistics
from diffusionlab.training.config import AutoencoderRunConfig, autoencoder_preset_config, deep_update
from diffusionlab.training.trainer import train_autoencoder
from helpers import run_cli

TINY_AE = {"model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "latent_channels": 2, "groups": 8},
           "train": {"batch_size": 32, "log_every": 5, "checkpoint_every": 10, "sample_every": 1000, "warmup_steps": 2,
                     "keep_checkpoints": 100}, "preview_n": 8}
TINY_LDM = {"model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [2],
                      "num_heads": 1, "groups": 8},
            "process": {"T": 100},
            "train": {"batch_size": 16, "log_every": 5, "checkpoint_every": 5, "sample_every": 1000, "warmup_steps": 2,
                      "keep_checkpoints": 100},
            "sample": {"n": 4, "steps": 3}}


def ae_config(steps: int, **loss) -> AutoencoderRunConfig:
    d = deep_update(deep_update(autoencoder_preset_config("digits-ae"), TINY_AE), {"train": {"steps": steps}})
    return AutoencoderRunConfig.from_dict(deep_update(d, {"loss": loss}) if loss else d)


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny digits autoencoder, 40 steps (f = 2: 8x8 images -> 2x4x4 latents)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ae") / "ae"
    train_autoencoder(ae_config(40), out, progress=False)
    return out


@pytest.fixture(scope="module")
def latent_run(ae_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DDPM trained 10 steps on the autoencoder's latents, through the CLI."""
    tmp = tmp_path_factory.mktemp("ldm")
    (tmp / "tiny.json").write_text(json.dumps(TINY_LDM))
    out = tmp / "ldm"
    assert main(["train", "--preset", "digits", "--latent", str(ae_run), "--config", str(tmp / "tiny.json"),
                 "--steps", "10", "--out", str(out), "--progress", "lines"]) == 0
    return out


# ---- codecs and the autoencoder's pieces ----


def test_pixel_codec_is_exact() -> None:
    images = load_dataset("digits", None, "all").images[:16]
    codec, x = PixelCodec(), to_model_range(images)
    assert torch.equal(codec.encode(x), x) and torch.equal(codec.decode(x), x)
    assert codec.latent_shape((1, 8, 8)) == (1, 8, 8) == codec.image_shape((1, 8, 8)) and codec.x0_clip == (-1.0, 1.0)
    flip = torch.arange(16) % 2 == 0
    data = codec.encode_dataset(images, hflip=True)
    assert torch.equal(data.batch(torch.arange(16), flip, None), torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x))


@pytest.mark.parametrize("mult, size, pad, latent", [([1, 2], 8, None, (3, 4, 4)), ([1, 2, 2], 28, 32, (3, 8, 8)),
                                                    ([1, 2, 2], 28, None, (3, 7, 7)), ([1, 2], 28, None, (3, 14, 14))])
def test_decode_of_encode_has_the_image_shape_for_f_2_and_4(mult: list[int], size: int, pad: int | None,
                                                             latent: tuple[int, int, int]) -> None:
    cfg = AutoencoderConfig(image_size=size, in_channels=1, base_channels=8, channel_mult=tuple(mult), latent_channels=3,
                            pad_to=pad, groups=8)
    model = AutoencoderKL(cfg)
    x = torch.rand(2, 1, size, size) * 2 - 1
    q = model.encode(x)
    assert q.mean.shape == (2, *latent) == cfg.latent_shape[:0] + (2, *latent) and cfg.factor == 2 ** (len(mult) - 1)
    assert model.decode(q.sample(torch.randn(q.mean.shape))).shape == x.shape
    if pad is not None:  # padding replicates the edges, and cropping undoes it exactly
        padded = model._pad(x)
        assert padded.shape[-1] == pad and torch.equal(model._crop(padded), x)
        assert torch.equal(padded[..., 0, 2:-2], x[..., 0, :])


def test_sizes_that_f_does_not_divide_need_pad_to() -> None:
    with pytest.raises(ConfigError, match="set pad_to"):
        AutoencoderConfig(image_size=28, channel_mult=(1, 2, 2, 2))  # f = 8
    with pytest.raises(ConfigError, match="multiple of f"):
        AutoencoderConfig(image_size=28, channel_mult=(1, 2, 2), pad_to=30)
    assert AutoencoderConfig(image_size=28, channel_mult=(1, 2, 2, 2), pad_to=32).latent_shape == (4, 4, 4)


def test_kl_and_reparameterisation_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    moments = torch.randn(3, 4, 2, 2, generator=g)
    q = DiagonalGaussian(moments)
    ref = torch.distributions.Normal(q.mean, q.std)
    expect = torch.distributions.kl_divergence(ref, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(q.kl(), expect, atol=1e-6)
    e = torch.randn(q.mean.shape, generator=g)
    assert torch.equal(q.sample(e), q.mean + q.std * e) and torch.equal(q.sample(None), q.mean)


def test_discriminator_losses() -> None:
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 0.5])
    # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1, 1.5]: (2.5 / 3 + 2.5 / 3) / 2
    assert torch.isclose(hinge_d_loss(real, fake), torch.tensor(2.5 / 3))
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    rec, adv = (3 * w).sum(), (w**2).sum()  # gradients (3, 3) and (2, -4): norms sqrt(18) and sqrt(20)
    assert torch.isclose(adaptive_weight(rec, adv, w), torch.tensor(18**0.5 / (20**0.5 + 1e-4)))


# ---- the autoencoder run ----


def test_tiny_autoencoder_learns_to_reconstruct_and_scales_latents_to_unit_variance(ae_run: Path) -> None:
    metrics = [json.loads(line) for line in (ae_run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["rec_l1"] < 0.7 * metrics[0]["rec_l1"], (metrics[0], metrics[-1])
    state = json.loads((ae_run / "checkpoints" / "step_00000040" / "state.json").read_text())
    stats = state["latent"]
    cfg = json.loads((ae_run / "config.json").read_text())
    model = AutoencoderKL(AutoencoderConfig.from_dict(cfg["model"]))
    model.load_state_dict(load_file(str(ae_run / "checkpoints" / "step_00000040" / "ema.safetensors")))
    images = load_dataset("digits", None, "all").images
    again = latent_statistics(model.eval(), images[:4096])
    assert again == stats  # the scale factor is the EMA weights' 1 / std(z) on the training images, reproducibly
    # A latent codec with that factor gives unit-variance latents (fresh posterior noise: within 2%).
    from diffusionlab.runs import autoencoder_section

    codec = build_codec(autoencoder_section(ae_run))
    z = torch.cat([codec.encode(to_model_range(images[i : i + 512]), torch.randn(len(images[i : i + 512]), 2, 4, 4,
                                                                                generator=torch.Generator().manual_seed(i)))
                   for i in range(0, len(images), 512)])
    assert abs(float(z.std()) - 1.0) < 0.02, float(z.std())
    # Reconstructions beat the untrained autoencoder's by far.
    x = to_model_range(images[:256])
    fresh = AutoencoderKL(AutoencoderConfig.from_dict(cfg["model"])).eval()
    err = lambda m: float((m.decode(m.encode(x).mean) - x).abs().mean())  # noqa: E731
    with torch.no_grad():
        assert err(model.eval()) < 0.6 * err(fresh), (err(model), err(fresh))
    assert (ae_run / "samples" / "step_00000040.png").is_file()


def test_autoencoder_with_discriminator_resumes_bit_for_bit(tmp_path: Path) -> None:
    """Two networks, two optimizers: 8 steps in one go equal 4 steps, a stop, and 4 more (discriminator from step 2)."""
    torch.set_num_threads(1)
    train_autoencoder(ae_config(8, disc_start=2, disc_layers=1), tmp_path / "full", progress=False)
    train_autoencoder(ae_config(4, disc_start=2, disc_layers=1), tmp_path / "split", progress=False)
    train_autoencoder(ae_config(8, disc_start=2, disc_layers=1), tmp_path / "split", resume=True, progress=False)
    for name in ("model", "ema", "optimizer", "disc", "optimizer_disc"):
        a = load_file(str(tmp_path / "full" / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "split" / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and a, name
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert "d_loss" in rows[-1] and "g_loss" in rows[-1] and rows[-1]["d_weight"] > 0


# ---- diffusion in the latent space ----


def test_latent_run_keeps_its_codec_and_samples_with_every_sampler(latent_run: Path, ae_run: Path) -> None:
    """Every sampler runs on the latent model through the same dispatch, and what `generate` returns is the codec's
    decoding of the latents the sampler drew (checked against a codec that only rescales them)."""
    cfg = json.loads((latent_run / "config.json").read_text())
    assert cfg["preset"] == "digits-ldm" and cfg["codec"]["kind"] == "autoencoder"
    assert cfg["codec"]["source"] == str(ae_run.resolve()) and cfg["model"]["in_channels"] == 2
    run = load_run(latent_run)
    assert run.model_shape == (2, 4, 4) and run.image_shape == (1, 8, 8) and run.codec.x0_clip is None

    class Rescale(PixelCodec):  # decode(z) = z / 1e4: in range for any latent the sampler draws here
        x0_clip = None

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return z / 1e4

    from diffusionlab.processes import FlowMatching

    flow = FlowMatching()  # the ode-* samplers need a continuous path: the same network read as a velocity
    for sampler in SAMPLER_NAMES:
        process = flow if sampler.startswith("ode-") else run.process
        den = process.denoiser(run.net)
        options = SamplerOptions(corrector_steps=2 if sampler in ("pc", "langevin") else None)
        res = generate(den, process, run.model_shape, 3, sampler, 3, options=options, seed=1, codec=run.codec)
        z = generate(den, process, run.model_shape, 3, sampler, 3, options=options, seed=1, codec=Rescale()).images * 1e4
        assert res.images.shape == (3, 1, 8, 8) and torch.isfinite(res.images).all(), sampler
        assert z.abs().max() < 1e4 and torch.allclose(res.images, run.codec.decode(z).clamp(-1, 1), atol=1e-3), sampler
    out = latent_run / "s.npz"
    assert main(["sample", str(latent_run), "--n", "6", "--sampler", "dpmpp2m", "--steps", "4", "--trajectory",
                 "--out", str(out)]) == 0
    assert np.load(out)["images"].shape == (6, 8, 8) and out.with_suffix(".gif").is_file()
    # The run keeps its own copy of the autoencoder: deleting the source changes nothing.
    moved = ae_run.with_name("ae-moved")
    shutil.move(str(ae_run), moved)
    try:
        again = load_run(latent_run)
        a = generate(again.denoiser, again.process, again.model_shape, 3, "ddim", 3, seed=1, codec=again.codec)
        b = generate(run.denoiser, run.process, run.model_shape, 3, "ddim", 3, seed=1, codec=run.codec)
        assert torch.equal(a.images, b.images)
    finally:
        shutil.move(str(moved), ae_run)


def test_evaluate_on_a_latent_run_says_the_bound_is_in_latent_space(latent_run: Path, capsys) -> None:
    assert main(["evaluate", str(latent_run), "--nll", "--nll-n", "8", "--nll-steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "LATENT space" in out and "not a pixel likelihood" in out
    report = json.loads(sorted((latent_run / "eval").glob("*.json"))[-1].read_text())
    assert report["nll"]["space"] == "latents" and np.isfinite(report["nll"]["bits_per_dim"])


def test_latent_run_resumes_bit_for_bit_after_kill9(ae_run: Path, tmp_path: Path) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_LDM))
    common = ["--preset", "digits", "--latent", str(ae_run), "--config", str(tmp_path / "tiny.json"), "--steps", "80"]
    full = run_cli("train", *common, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "diffusionlab.cli", "train", *common, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step_00000010").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "step_00000080").exists(), "run finished before the kill"
    resumed = run_cli("train", "--resume", "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(tmp_path / "full" / "checkpoints" / "step_00000080" / f"{name}.safetensors"))
        b = load_file(str(killed / "checkpoints" / "step_00000080" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after kill -9"


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err, err


def test_bad_latent_inputs_give_one_line_errors_and_write_nothing(ae_run: Path, latent_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    _one_line_error(run_cli("train", "--latent", str(latent_run), "--out", str(out)), "is not an autoencoder run")
    _one_line_error(run_cli("train", "--latent", str(tmp_path / "nope"), "--out", str(out)), "not found")
    _one_line_error(run_cli("train", "--latent", str(ae_run), "--channels", "3", "--steps", "2", "--out", str(out)),
                    "1-channel 8x8 images; this run's data is 3-channel 8x8")
    _one_line_error(run_cli("train", "--preset", "mnist-ldm", "--out", str(out)), "give --latent AE_RUN")
    _one_line_error(run_cli("train", "--latent", str(ae_run), "--loss", "hybrid", "--variance", "learned", "--steps", "2",
                            "--out", str(out)), "use loss simple")
    assert not out.exists()
    broken = tmp_path / "broken-ae"
    shutil.copytree(ae_run, broken)
    newest = sorted((broken / "checkpoints").iterdir())[-1]
    (newest / "ema.safetensors").write_bytes((newest / "ema.safetensors").read_bytes()[:100])
    _one_line_error(run_cli("train", "--latent", str(broken), "--out", str(out)), "corrupt")
    assert not out.exists()
    _one_line_error(run_cli("sample", str(ae_run)), "is an autoencoder run")
    damaged = tmp_path / "damaged-ldm"
    shutil.copytree(latent_run, damaged)
    (damaged / "codec" / "autoencoder.safetensors").write_bytes(b"garbage")
    _one_line_error(run_cli("sample", str(damaged), "--n", "2", "--out", str(tmp_path / "x.npz")), "sha256")
    assert not (tmp_path / "x.npz").exists()
    _one_line_error(run_cli("train-autoencoder", "--kl-weight", "-1", "--out", str(out)), "kl_weight")
    _one_line_error(run_cli("train-autoencoder", "--pad-to", "7", "--out", str(out)), "pad_to")
    assert not out.exists()


def test_evaluate_an_autoencoder_run_reports_psnr_and_rfid(ae_run: Path, capsys) -> None:
    """`evaluate AE_RUN --fid`: PSNR of the test reconstructions (closed form on 8-bit pixels) and rFID beside the floor."""
    from diffusionlab.evaluation.reconstruction import psnr

    a = torch.full((2, 1, 2, 2), 100, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, 0] = 110  # MSE 100 / 4 = 25 in image 0: 10 log10(255^2 / 25) = 34.15 dB
    assert torch.allclose(psnr(b, a), torch.tensor([10 * np.log10(255**2 / 25), 10 * np.log10(255**2 / 1e-10)],
                                                   dtype=torch.float64))
    assert main(["evaluate", str(ae_run), "--fid", "--n", "200"]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "rFID" in out and "real-data floor" in out
    report = json.loads(sorted((ae_run / "eval").glob("*.json"))[-1].read_text())["reconstruction"]
    assert 10 < report["psnr_mean"] < 60 and report["quality"]["fid"] > report["quality"]["floor"]["fid"] * 0.5
    assert main(["evaluate", str(ae_run), "--nll"]) == 2
    assert "use --fid" in capsys.readouterr().err


def test_any_family_with_class_conditioning_and_guidance_in_latent_space(ae_run: Path, tmp_path: Path, capsys) -> None:
    """`train --latent` with another --method and --class-conditional; `sample --class --guidance-scale` on it."""
    (tmp_path / "tiny.json").write_text(json.dumps({k: v for k, v in TINY_LDM.items() if k != "process"}))
    run = tmp_path / "flow-ldm"
    assert main(["train", "--preset", "digits", "--latent", str(ae_run), "--method", "flow", "--class-conditional",
                 "--config", str(tmp_path / "tiny.json"), "--steps", "4", "--out", str(run), "--progress", "lines"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["process"]["method"] == "flow" and cfg["model"]["num_classes"] == 10 and cfg["model"]["time_scale"] == 1000
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "4", "--class", "3", "--guidance-scale", "2", "--steps", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "classifier-free scale S = 2" in printed and np.load(out)["images"].shape == (4, 8, 8)


def test_perceptual_term_from_the_domain_network(tmp_path: Path) -> None:
    """The feature distance is 0 between an image and itself, positive and symmetric otherwise, and grows with the
    corruption; an autoencoder trains with it (the domain classifier of the data, trained once and cached)."""
    from diffusionlab.evaluation.extractors import domain_extractor
    from diffusionlab.models.perceptual import FeatureDistance

    torch.set_num_threads(1)
    train = load_dataset("digits", None, "all")
    d = FeatureDistance(domain_extractor(train).model.body)
    x = to_model_range(train.images[:64])
    g = torch.Generator().manual_seed(0)
    small, large = ((x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1) for s in (0.1, 0.5))
    assert torch.equal(d(x, x), torch.zeros(64))
    assert torch.allclose(d(x, small), d(small, x), atol=1e-6)
    assert bool((d(x, small) > 0).all()) and float(d(x, large).mean()) > 2 * float(d(x, small).mean())
    train_autoencoder(ae_config(4, perceptual_weight=1.0), tmp_path / "ae-p", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "ae-p" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[-1]["loss"])


def test_an_upsampler_trains_and_upsamples_in_latent_space(ae_run: Path, tmp_path: Path) -> None:
    """--task superres with --latent: the model lives on the autoencoder's 2x4x4 latents of the 8x8 image, its network
    sees the 4x4 low-resolution image beside them, and `upsample` decodes 8x8 pixels."""
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_LDM))
    out = tmp_path / "up"
    assert main(["train", "--preset", "digits-sr", "--latent", str(ae_run), "--config", str(tmp_path / "tiny.json"),
                 "--steps", "4", "--out", str(out), "--progress", "lines"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["codec"]["kind"] == "autoencoder" and cfg["model"]["in_channels"] == 2
    assert cfg["model"]["lowres"] == {"image_size": 4, "channels": 1} and cfg["task"]["kind"] == "superres"
    small = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "small.npz", images=small)
    assert main(["upsample", str(out), "--images", str(tmp_path / "small.npz"), "--steps", "3",
                 "--out", str(tmp_path / "big.npz")]) == 0
    assert np.load(tmp_path / "big.npz")["images"].shape == (3, 8, 8)
