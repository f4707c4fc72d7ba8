"""Super-resolution and cascades (issue 16; SR3, Saharia et al. 2021; CDM, Ho et al. 2022).

- The degradation is the data pipeline's resize (so a cascade's base draws what its upsampler takes), and linear.
- The concatenated condition reaches the output of every backbone; folding keeps every low-resolution pixel.
- An upsampler driven by the exact conditional denoiser of Gaussian data reproduces the conditional moments (with and
  without conditioning augmentation), through `superres.upsample` and two samplers.
- Through the CLI: a tiny cascade (train base + upsampler, sample --then, upsample, evaluate), a trained upsampler
  beats bicubic interpolation, and a super-resolution run resumes bit for bit after kill -9.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusionlab.data.dataset import resize_images
from diffusionlab.models import build_network
from diffusionlab.models.lowres import fold_factor
from diffusionlab.sampling import SamplerOptions
from diffusionlab.superres import augment, bicubic_upsample, condition, degrade, upsample
from diffusionlab.training.config import ProcessConfig
from helpers import TINY, run_cli


def test_degrade_is_the_data_resize_and_is_linear():
    """superres.degrade equals the pipeline's `--image-size` resize (to the uint8 rounding), so a 14x14 base model is
    trained on exactly what the x2 upsampler is conditioned on; and it is linear (a matrix), as the Gaussian test
    below assumes."""
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    x = torch.from_numpy(u8).float() / 127.5 - 1
    ours = ((degrade(x, 2) + 1) * 127.5).round().clamp(0, 255)
    theirs = torch.from_numpy(resize_images(u8, 14)).float()
    assert (ours - theirs).abs().max() <= 1  # the same filter; rounding of a float32 sum may differ by one level
    a, b = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.randn(3, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(degrade(2 * a - 3 * b, 4, blur=0.7), 2 * degrade(a, 4, blur=0.7) - 3 * degrade(b, 4, blur=0.7))
    const = torch.full((1, 1, 8, 8), 0.25, dtype=torch.float64)
    assert torch.allclose(degrade(const, 2, blur=1.0), torch.full((1, 1, 4, 4), 0.25, dtype=torch.float64))


def _wake(net: torch.nn.Module) -> torch.nn.Module:
    """Random weights in the zero-initialised layers, so every input path carries signal."""
    torch.manual_seed(3)
    for p in net.parameters():
        if torch.count_nonzero(p) == 0:
            torch.nn.init.normal_(p, std=0.2)
    return net.eval()


@pytest.mark.parametrize("network, grid, low", [
    ({"network": "unet", "base_channels": 8, "channel_mult": [1, 2], "attention_resolutions": [], "groups": 8}, 8, 4),
    ({"network": "dit", "patch_size": 2, "depth": 1, "width": 32, "num_heads": 2}, 8, 4),
    ({"network": "dit", "patch_size": 2, "depth": 1, "width": 32, "num_heads": 2}, 8, 14),  # latents coarser than y
])
def test_the_concatenated_condition_reaches_the_output(network: dict, grid: int, low: int):
    """With x_t and t fixed, changing the low-resolution image (or only its augmentation level) changes the output."""
    net = _wake(build_network({**network, "image_size": grid, "in_channels": 2, "out_channels": 2,
                               "lowres": {"image_size": low, "channels": 1}}))
    x, t = torch.randn(2, 2, grid, grid), torch.full((2,), 30.0)
    lowres, s = torch.randn(2, 1, low, low), torch.tensor([0.0, 0.0])
    with torch.no_grad():
        base = net(x, t, condition(lowres, s))
        other = net(x, t, condition(lowres.flip(-1), s))
        noisier = net(x, t, condition(lowres, s + 0.3))
    assert base.shape == (2, 2, grid, grid)
    assert (other - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    assert (noisier - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    with pytest.raises(Exception, match="needs low-resolution images"):
        net(x, t)


def test_folding_keeps_every_low_resolution_pixel():
    """A 16x16 condition on an 8x8 latent grid is folded (k = 2) into channels, not averaged: every value survives."""
    net = build_network({"network": "dit", "patch_size": 2, "depth": 1, "width": 32, "num_heads": 2, "image_size": 8,
                         "in_channels": 4, "lowres": {"image_size": 16, "channels": 1}})
    assert fold_factor((16, 16), (8, 8)) == 2 and fold_factor((14, 14), (8, 8)) == 2 and fold_factor((4, 4), (8, 8)) == 1
    y = torch.randn(1, 2, 16, 16)
    folded = net.fold(y)
    assert folded.shape == (1, 8, 8, 8)
    assert torch.equal(folded.flatten().sort().values, y.flatten().sort().values)


# ---- the exact conditional denoiser of Gaussian data -------------------------------------------------------------

SIDE, FACTOR = 4, 2
D, d = SIDE * SIDE, (SIDE // FACTOR) ** 2


def _degradation_matrix() -> torch.Tensor:
    """A (d, D): degrade() applied to the standard basis (it is linear)."""
    basis = torch.eye(D, dtype=torch.float64).view(D, 1, SIDE, SIDE)
    return degrade(basis, FACTOR).reshape(D, d).T


def _prior() -> tuple[torch.Tensor, torch.Tensor]:
    """mu (D,) and a smooth, correlated covariance Sigma (D, D) on the 4x4 grid."""
    ij = torch.stack(torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij"), -1).reshape(D, 2).double()
    dist2 = ((ij[:, None] - ij[None]) ** 2).sum(-1)
    # Small enough that samples stay inside [-1, 1], where generate() returns images.
    sigma = 0.015 * torch.exp(-dist2 / 3.0) + 0.002 * torch.eye(D, dtype=torch.float64)
    mu = torch.linspace(-0.3, 0.3, D, dtype=torch.float64)
    return mu, sigma


class ExactConditionalNet:
    """E[eps | x_t, y] for x0 ~ N(mu, Sigma) observed through z = sqrt(1 - s^2) A x0 + s n (Kalman / Gaussian
    conditioning): x0 | z ~ N(m(z), C) with K = Sigma B^T (B Sigma B^T + s^2 I)^-1, B = sqrt(1 - s^2) A,
    m(z) = mu + K (z - B mu), C = Sigma - K B Sigma; then on x_t = a x0 + b eps,
    E[eps | x_t] = b (a^2 C + b^2 I)^-1 (x_t - a m(z)). It reads z and s from the network's condition y."""

    def __init__(self, path):
        self.path, self.A = path, _degradation_matrix()
        self.mu, self.sigma = _prior()

    def posterior(self, s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """K and C at augmentation level s."""
        B = (1 - s**2) ** 0.5 * self.A
        K = self.sigma @ B.T @ torch.linalg.inv(B @ self.sigma @ B.T + s**2 * torch.eye(d, dtype=torch.float64))
        return K, self.sigma - K @ B @ self.sigma

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s_all = y[:, -1].reshape(len(y), -1)
        assert torch.all(s_all == s_all[:, :1]), "the level channel is constant"
        s = float(s_all[0, 0])
        assert torch.all(s_all == s)
        K, C = self.posterior(s)
        z = y[:, :-1].reshape(len(y), d).double()
        m = self.mu + (z - (1 - s**2) ** 0.5 * self.mu @ self.A.T) @ K.T  # (B, D)
        t = torch.as_tensor(t).reshape(-1)[0]
        a, b = float(self.path.alpha(t)), float(self.path.sigma(t))
        cov = a**2 * C + b**2 * torch.eye(D, dtype=torch.float64)
        eps = b * torch.linalg.solve(cov, (x.reshape(len(x), D).double() - a * m).T).T
        return eps.reshape(x.shape).to(x.dtype)


@pytest.mark.parametrize("sampler, steps, level", [("ddpm", 1000, 0.0), ("ddpm", 1000, 0.3), ("heun", 40, 0.3)])
def test_an_upsampler_on_the_exact_conditional_denoiser_reproduces_the_conditional_moments(sampler, steps, level):
    """Two low-resolution images, 3000 samples each (in batches that cross the boundary between them): the samples'
    mean and covariance match x0 | lowres, which with augmentation at level s is the mixture over z of x0 | z:
    N(mu + K (sqrt(1 - s^2) lowres - B mu), C + s^2 K K^T). Tolerances: each mean within 4.5 standard errors, the
    covariance within 12% (Frobenius; the sampling error of a 16x16 covariance from 3000 draws is about 4%)."""
    process = ProcessConfig("ddpm", {"schedule": "linear", "T": 1000, "prediction": "eps", "variance": "beta_tilde"}).build()
    net = ExactConditionalNet(process.path)
    torch.manual_seed(0)
    mu, sigma = _prior()
    truth = torch.distributions.MultivariateNormal(mu, sigma).sample((2,))  # two real high-resolution images
    lowres = degrade(truth.view(2, 1, SIDE, SIDE), FACTOR)
    n = 3000
    rows = torch.cat([lowres[:1].expand(n, -1, -1, -1), lowres[1:].expand(n, -1, -1, -1)]).double()
    res = upsample(process.denoiser(net), process, (1, SIDE, SIDE), rows, sampler, steps, level=level, seed=5,
                   batch_size=1024, options=SamplerOptions(clip_x0=False))
    K, C = net.posterior(level)
    B = (1 - level**2) ** 0.5 * net.A
    cov = C + level**2 * K @ K.T
    se = (cov.diagonal() / n).sqrt()
    means = [mu + ((1 - level**2) ** 0.5 * lowres[i].reshape(d).double() - B @ mu) @ K.T for i in range(2)]
    for i in range(2):
        x = res.images[i * n:(i + 1) * n].reshape(n, D).double()
        assert ((x.mean(0) - means[i]).abs() / se).max() < 4.5, ((x.mean(0) - means[i]) / se)
        err = torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov)
        assert err < 0.12, err
        # ... and not the other image's: a sampler that mixed up the rows would fail here.
        assert ((x.mean(0) - means[1 - i]).abs() / se).max() > 10


def test_augmentation_is_the_vp_forward_process_of_the_condition():
    """z_s = sqrt(1 - s^2) lowres + s n keeps unit variance for unit-variance inputs, and s = 0 is the identity."""
    g = torch.Generator().manual_seed(0)
    lowres, noise = torch.randn(20000, 1, 2, 2, generator=g), torch.randn(20000, 1, 2, 2, generator=g)
    z = augment(lowres, torch.full((20000,), 0.6), noise)
    assert abs(float(z.var()) - 1) < 0.03
    assert torch.equal(augment(lowres, torch.zeros(20000), noise), lowres)
    up = bicubic_upsample(torch.zeros(1, 1, 3, 3), 4)
    assert up.shape == (1, 1, 12, 12) and not up.any()


# ---- through the command line --------------------------------------------------------------------------------------

SR_TINY = ["--preset", "digits-sr", "--base-channels", "16", "--channel-mult", "1,2", "--attention-resolutions", "",
           "--progress", "lines", "--grid-n", "4", "--grid-steps", "3"]


@pytest.mark.slow
def test_a_tiny_cascade_through_the_cli(tmp_path: Path):
    """A class-conditional 4x4 base, an x2 upsampler to 8x8 (digits-sr), then sample --then (classes in turn, guided),
    upsample and evaluate --fid. The cascade's
    outputs follow their inputs (degraded again, each is far closer to its own base sample than to another's), and
    the upsampler restores held-out test digits better than bicubic interpolation by SSIM and FID. (Not by PSNR: one
    sample of the posterior is not its mean, which is what PSNR rewards; SR3 reports the same.)"""
    base, up = tmp_path / "base", tmp_path / "up"
    p = run_cli("train", "--preset", "digits", "--image-size", "4", "--channel-mult", "1", "--steps", "40",
                "--class-conditional", "--out", str(base), "--grid-n", "4", "--grid-steps", "3", "--progress", "lines")
    assert p.returncode == 0, p.stderr
    p = run_cli("train", *SR_TINY, "--steps", "400", "--out", str(up), "--lr", "3e-3")
    assert p.returncode == 0, p.stderr
    cfg = json.loads((up / "config.json").read_text())
    assert cfg["task"] == {"kind": "superres", "factor": 2, "blur": 0.0, "aug_max": 0.2, "aug_level": 0.1}
    assert cfg["model"]["lowres"] == {"image_size": 4, "channels": 1}

    out = tmp_path / "cascade.npz"
    p = run_cli("sample", str(base), "--n", "6", "--steps", "5", "--class", "all", "--guidance-scale", "2",
                "--then", str(up), "--then-steps", "5", "--aug-level", "0.1", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "guidance" in p.stdout
    high = np.load(out)["images"]
    low = np.load(tmp_path / "cascade-base.npz")["images"]
    assert high.shape == (6, 8, 8) and low.shape == (6, 4, 4) and high.dtype == np.uint8
    assert (tmp_path / "cascade.png").is_file()
    redone = degrade(torch.from_numpy(high).double()[:, None] / 127.5 - 1, 2)[:, 0]
    low_t = torch.from_numpy(low).double() / 127.5 - 1
    own = ((redone - low_t) ** 2).mean()
    others = ((redone - low_t.roll(1, 0)) ** 2).mean()
    assert own < 0.5 * others, (own, others)

    again = tmp_path / "again.npz"
    p = run_cli("upsample", str(up), "--images", str(tmp_path / "cascade-base.npz"), "--steps", "5", "--out", str(again))
    assert p.returncode == 0, p.stderr
    assert np.load(again)["images"].shape == (6, 8, 8)

    report = tmp_path / "eval.json"
    p = run_cli("evaluate", str(up), "--fid", "--n", "200", "--steps", "10", "--json", str(report))
    assert p.returncode == 0, p.stderr
    r = json.loads(report.read_text())["superres"]
    assert r["n"] == 200 and r["factor"] == 2 and r["nfe"] == 10
    model, bicubic = r["model"], r["bicubic"]
    assert model["ssim_mean"] > bicubic["ssim_mean"] + 0.03, (model, bicubic)
    assert model["quality"]["fid"] < 0.5 * bicubic["quality"]["fid"], (model["quality"], bicubic["quality"])
    assert "PSNR" in p.stdout and "bicubic" in p.stdout


DIT = ["--network", "dit", "--patch-size", "2", "--depth", "2", "--width", "32"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["flow", "vesde", "vpsde", "ncsn"])
def test_every_family_trains_an_upsampler_and_upsamples_with_its_own_sampler(method: str, tmp_path: Path):
    """The condition goes through y, so a flow-matching or score-SDE upsampler trains and samples like a DDPM one."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({k: v for k, v in TINY.items() if k != "process"}))
    run = tmp_path / "up"
    p = run_cli("train", "--preset", "digits-sr", "--method", method, "--config", str(cfg), "--steps", "3",
                "--out", str(run), "--progress", "lines")
    assert p.returncode == 0, p.stderr
    small = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "small.npz", images=small)
    p = run_cli("upsample", str(run), "--images", str(tmp_path / "small.npz"), "--steps", "4",
                "--out", str(tmp_path / "big.npz"))
    assert p.returncode == 0, p.stderr
    assert np.load(tmp_path / "big.npz")["images"].shape == (3, 8, 8)


UNET = ["--base-channels", "8", "--channel-mult", "1,2", "--attention-resolutions", ""]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [UNET, DIT, ["--preset", "digits", "--class-conditional", *DIT]],
                         ids=["superres-unet", "superres-dit", "dit"])
def test_a_run_killed_mid_checkpoint_resumes_bit_for_bit(extra: list[str], tmp_path: Path):
    """SIGKILL in the middle of writing checkpoint 6 (fault injection: some tensors written, none renamed), then
    --resume: the final weights, EMA and optimizer equal a run trained straight through. For an upsampler this covers
    the condition's draws (augmentation level and noise); for a DiT, the transformer's state."""
    from safetensors.torch import load_file

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({k: v for k, v in TINY.items() if k != "model"}))
    common = ["train", "--preset", "digits-sr", "--config", str(cfg), "--progress", "lines", "--checkpoint-every", "2",
              *extra]
    full, split = tmp_path / "full", tmp_path / "split"
    p = run_cli(*common, "--steps", "10", "--out", str(full))
    assert p.returncode == 0, p.stderr
    killed = run_cli(*common, "--steps", "10", "--out", str(split), env={"DIFFUSIONLAB_FAULT": "checkpoint:tensors@6"})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert not (split / "checkpoints" / "step_00000006").exists()
    resumed = run_cli("train", "--resume", "--out", str(split))
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(full / "checkpoints" / "step_00000010" / f"{name}.safetensors"))
        b = load_file(str(split / "checkpoints" / "step_00000010" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after the kill"
