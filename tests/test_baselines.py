"""The baselines diffusion is compared against (docs/maths.md section 9), held to their papers' closed forms:

- GAN: for a fixed generator, the discriminator trained with our loss reaches D* = p_data / (p_data + p_g)
  (Goodfellow et al. 2014, Proposition 1); the game with the non-saturating loss moves G's moments to a 1-D mixture's.
- VAE: the ELBO equals log p(x) at the exact posterior of a linear-Gaussian model and falls short of it by exactly
  KL(q || posterior) otherwise; the KL term is torch.distributions'; the discretized logistic is a distribution over
  the 256 bins.
- Flow: Glow (normflows' blocks, our assembly) inverts to 1e-5, its log-determinant is autograd's Jacobian's, and
  fitted to Gaussian data its bits/dim reach the data's entropy; the dequantization offset gives uniform 8-bit data
  exactly 8 bits/dim.
- Each family trains, samples and evaluates through the CLI, and resumes bit for bit after kill -9.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diffusionlab.baselines.gan import discriminator_loss, generator_loss
from diffusionlab.baselines.nf import BITS_OFFSET, dequantize, flow_bits_per_dim, quantize
from diffusionlab.baselines.vae import discretized_logistic_log_likelihood
from diffusionlab.models.autoencoder import DiagonalGaussian
from diffusionlab.models.glow import Glow, GlowConfig, initialize
from diffusionlab.models.vae import elbo_terms
from helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


class MLP(nn.Module):
    """A small 1-D network with the (x, y) signature of our discriminators and generators."""

    def __init__(self, width: int = 32, shift: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
        self.shift = shift

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).squeeze(1) + self.shift


def _normal_pdf(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_the_discriminator_reaches_the_optimal_d_star():
    """p_data = N(1, 0.6^2), p_g = N(-0.5, 0.8^2) held fixed: after 3,000 Adam steps on our discriminator loss,
    sigmoid(D(x)) is p_data / (p_data + p_g) within 0.04 on [-1.5, 2.5] (where both have mass). Measured: 0.015."""
    torch.manual_seed(0)
    disc = MLP()
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    for _ in range(3000):
        real = 1.0 + 0.6 * torch.randn(512, 1)
        fake = -0.5 + 0.8 * torch.randn(512, 1)
        loss, _ = discriminator_loss(disc, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.linspace(-1.5, 2.5, 81).unsqueeze(1)
    p, q = _normal_pdf(x, 1.0, 0.6), _normal_pdf(x, -0.5, 0.8)
    with torch.no_grad():
        err = (torch.sigmoid(disc(x)) - (p / (p + q)).squeeze(1)).abs().max()
    assert err < 0.04, err


def test_the_game_moves_the_generators_moments_to_the_mixtures():
    """Target 0.5 N(-2, 0.5^2) + 0.5 N(2, 0.5^2) (mean 0, std 2.06); G starts at mean 3 and std < 0.5. Alternating our
    discriminator and non-saturating generator losses, G's mean comes within 0.5 of 0 and its std within 0.5 of 2.06,
    and it puts at least 35% of its mass on each side (no collapse here). Measured over seeds 0-2 at steps 1,000-4,000:
    means within 0.3 of 0, stds 1.8-2.4, 42-49% on the left (a GAN oscillates around the equilibrium: hence the
    tolerances)."""
    torch.manual_seed(0)
    gen, disc = MLP(shift=3.0), MLP()
    with torch.no_grad():
        gen.net[-1].weight.mul_(0.1)
    opt_g = torch.optim.Adam(gen.parameters(), lr=5e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=5e-4, betas=(0.5, 0.999))

    def data(n: int) -> torch.Tensor:
        return torch.where(torch.rand(n, 1) < 0.5, -2.0, 2.0) + 0.5 * torch.randn(n, 1)

    with torch.no_grad():
        start = gen(torch.randn(4096, 1)).unsqueeze(1)
    assert abs(start.mean() - 3) < 0.3 and start.std() < 0.5
    for _ in range(3000):
        fake = gen(torch.randn(256, 1)).unsqueeze(1)
        d_loss, _ = discriminator_loss(disc, data(256), fake.detach())
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = generator_loss(disc, gen(torch.randn(256, 1)).unsqueeze(1))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    with torch.no_grad():
        x = gen(torch.randn(20000, 1))
    assert abs(float(x.mean())) < 0.5, float(x.mean())
    assert abs(float(x.std()) - math.sqrt(4.25)) < 0.5, float(x.std())
    assert (x < -1).float().mean() > 0.35 and (x > 1).float().mean() > 0.35


def _linear_gaussian(seed: int = 0):
    """x = W z + b + s e with z ~ N(0, I_2), e ~ N(0, I_4), W with orthogonal columns (so the posterior is diagonal)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    W = Q[:, :2] * torch.tensor([2.0, 0.7], dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    s = 0.5
    return W, b, s


def _log_px(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
    cov = W @ W.T + s**2 * torch.eye(4, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x)


def _exact_posterior(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    precision = torch.eye(2, dtype=torch.float64) + W.T @ W / s**2  # diagonal: W's columns are orthogonal
    var = 1.0 / torch.diagonal(precision)
    return (x - b) @ W / s**2 * var, var.expand(len(x), 2)


def test_the_elbo_is_the_log_likelihood_at_the_exact_posterior_and_below_it_by_the_kl_otherwise():
    W, b, s = _linear_gaussian()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 2, generator=g, dtype=torch.float64)
    x = z @ W.T + b + s * torch.randn(8, 4, generator=g, dtype=torch.float64)

    def log_likelihood(z_: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(z_ @ W.T + b, s).log_prob(x).sum(-1)

    exact = _log_px(x, W, b, s)
    mean, var = _exact_posterior(x, W, b, s)
    noise = torch.randn(200_000, 8, 2, generator=g, dtype=torch.float64)  # broadcast: 200,000 draws per image
    # E_q log p(x | z) - KL(q || p(z)) = log p(x) - KL(q || p(z | x)): zero gap at the exact posterior, else the KL.
    for shift, widen in ((0.0, 0.0), (0.3, 0.4), (-0.5, -0.7)):
        q_mean, q_logvar = mean + shift, var.log() + widen
        log_px_z, kl = elbo_terms(DiagonalGaussian(torch.cat([q_mean, q_logvar], dim=1)), log_likelihood, noise)
        elbo = log_px_z.mean(0) - kl
        gap = torch.distributions.kl_divergence(torch.distributions.Normal(q_mean, torch.exp(0.5 * q_logvar)),
                                                torch.distributions.Normal(mean, var.sqrt())).sum(1)
        se = log_px_z.std(0) / math.sqrt(len(noise))
        assert ((exact - elbo - gap).abs() < 4 * se + 1e-9).all(), (exact - elbo, gap, se)
        if shift:
            assert (elbo < exact).all()


def test_the_kl_term_is_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 7, generator=g), 2 * torch.randn(5, 7, generator=g)
    ours = DiagonalGaussian(torch.cat([mean, logvar], dim=1)).kl()
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, torch.exp(0.5 * logvar)),
                                            torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mean,log_scale", [(0.0, -6.5), (0.3, -3.0), (-0.9, 0.0), (1.5, 2.0), (0.01, -7.0)])
def test_the_discretized_logistic_is_a_distribution_over_the_256_bins(mean: float, log_scale: float):
    """Its 256 bin probabilities sum to 1, and each interior bin is the logistic CDF's difference (float64)."""
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    ll = discretized_logistic_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale))
    assert abs(float(ll.exp().sum()) - 1) < 1e-9
    s = math.exp(log_scale)
    cdf = torch.sigmoid((x[1:-1] + 1 / 255 - mean) / s) - torch.sigmoid((x[1:-1] - 1 / 255 - mean) / s)
    ok = cdf > 1e-12  # where the naive difference is itself accurate
    torch.testing.assert_close(ll[1:-1][ok].exp(), cdf[ok], rtol=1e-6, atol=1e-12)


def _small_glow(dtype: torch.dtype = torch.float32, num_classes: int | None = None) -> Glow:
    torch.manual_seed(0)
    glow = Glow(GlowConfig(image_size=4, levels=2, depth=2, hidden_channels=8, num_classes=num_classes)).to(dtype)
    initialize(glow, torch.rand(32, 1, 4, 4, dtype=dtype) - 0.5)
    with torch.no_grad():  # away from the identity the zero-initialised couplings start at
        for p in glow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return glow


def test_glow_inverts_to_1e_5():
    glow = _small_glow()
    x = torch.rand(64, 1, 4, 4) * 2 - 1
    z, _ = glow.latents(x)
    assert (glow.decode(z) - x).abs().max() < 1e-5
    big = Glow(GlowConfig(image_size=28, levels=2, depth=4, hidden_channels=16))
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    initialize(big, x)
    assert (big.decode(big.latents(x)[0]) - x).abs().max() < 1e-5


def test_glows_log_determinant_is_autograds_jacobian():
    glow = _small_glow(torch.float64)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    _, log_det = glow.latents(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(
            lambda v: torch.cat([z.flatten() for z in glow.latents(v.view(1, 1, 4, 4))[0]]), x[i].flatten())
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=1e-9)


def test_a_glow_fitted_to_gaussian_data_reaches_its_entropy():
    """Data N(0.1, Sigma) on 1x4x4 with an image-like (stationary) covariance Sigma_ij = 0.25 exp(-d_ij^2 / 1.5^2) +
    0.01 delta_ij: after 400 Adam steps the multi-scale Glow's test NLL in bits/dim is within 0.03 of the entropy
    0.5 log2 det(2 pi e Sigma) / D = 0.497, and not below it beyond the estimate's noise. Measured: +0.006."""
    g = torch.Generator().manual_seed(0)
    ii, jj = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    pos = torch.stack([ii.flatten(), jj.flatten()], 1)
    sigma = 0.25 * torch.exp(-((pos[:, None] - pos[None]) ** 2).sum(-1) / 1.5**2) + 0.01 * torch.eye(16)
    chol = torch.linalg.cholesky(sigma)

    def data(n: int) -> torch.Tensor:
        return (torch.randn(n, 16, generator=g) @ chol.T + 0.1).view(n, 1, 4, 4)

    entropy = float(0.5 * torch.logdet(2 * math.pi * math.e * sigma.double()) / (16 * math.log(2)))
    torch.manual_seed(0)
    glow = Glow(GlowConfig(image_size=4, levels=2, depth=4, hidden_channels=32))
    initialize(glow, data(512))
    opt = torch.optim.Adam(glow.parameters(), lr=2e-3)
    for _ in range(400):
        loss = -glow.log_prob(data(256)).mean() / (16 * math.log(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        bpd = -glow.log_prob(data(20000)) / (16 * math.log(2))
    mean, se = float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd)))
    assert entropy - 4 * se < mean < entropy + 0.03, (mean, entropy)


def test_dequantization_gives_uniform_8_bit_data_8_bits_per_dim():
    """A density uniform on [-1, 1)^D (log p = -D ln 2) is uniform over the 256 bins: 8 bits per dimension; and
    quantize inverts dequantize for any u in [0, 1)."""

    class Uniform:
        def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return torch.full((len(x),), -x[0].numel() * math.log(2))

    assert BITS_OFFSET == 7
    torch.testing.assert_close(flow_bits_per_dim(Uniform(), torch.zeros(3, 1, 4, 4), None), torch.full((3,), 8.0))
    k = torch.arange(256, dtype=torch.uint8).repeat(4)
    u = torch.rand(1024).clamp(max=1 - 1e-6)
    assert torch.equal(torch.round((quantize(dequantize(k, u)) + 1) * 127.5).to(torch.uint8), k)


# --- through the command line: train -> sample -> evaluate, and kill -9 -> resume -----------------------------------

TINY_BASELINE = {"train": {"batch_size": 16, "log_every": 2, "checkpoint_every": 2, "sample_every": 1000,
                           "warmup_steps": 2, "keep_checkpoints": 100}, "preview_n": 4}
TINY_MODELS = {"gan": ["--base-channels", "8", "--latent-dim", "8"],
               "vae": ["--base-channels", "8", "--latent-dim", "4"],
               "nf": ["--depth", "2", "--hidden-channels", "8"]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gan", "vae", "nf"])
def test_train_sample_evaluate_through_the_cli(kind: str, tmp_path: Path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_BASELINE))
    run = tmp_path / "run"
    p = run_cli("train", "--method", kind, "--config", str(cfg), "--steps", "6", "--out", str(run), "--progress",
                "lines", "--class-conditional", *TINY_MODELS[kind])
    assert p.returncode == 0, p.stderr
    saved = json.loads((run / "config.json").read_text())
    assert saved["kind"] == kind and saved["model"]["num_classes"] == 10
    out = tmp_path / "s.npz"
    p = run_cli("sample", str(run), "--n", "20", "--class", "3", "--out", str(out))
    assert p.returncode == 0, p.stderr
    images = np.load(out)["images"]
    assert images.shape == (20, 8, 8) and images.dtype == np.uint8 and (tmp_path / "s.png").is_file()
    assert np.array_equal(np.load(out)["labels"], np.full(20, 3))  # the class of every sample is stored
    again = tmp_path / "t.npz"
    assert run_cli("sample", str(run), "--n", "20", "--class", "3", "--out", str(again)).returncode == 0
    assert np.array_equal(np.load(again)["images"], images)  # the same seed, the same images
    report = tmp_path / "r.json"
    flags = ["--nll", "--nll-n", "32"] if kind != "gan" else []
    p = run_cli("evaluate", str(run), "--fid", "--n", "64", *flags, "--json", str(report))
    assert p.returncode == 0, p.stderr
    r = json.loads(report.read_text())
    assert math.isfinite(r["quality"]["fid"]) and r["quality"]["n_fake"] == 64
    if kind == "gan":
        p = run_cli("evaluate", str(run), "--nll")
        assert p.returncode == 2 and "no likelihood" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    else:
        # An untrained-ish model of 8-bit data: more than 0 and, with 6 steps of training, not far below 8 bits/dim.
        assert 0 < r["nll"]["bits_per_dim"] < 12 and r["nll"]["n_images"] == 32
        assert r["nll"]["what"] == ("ELBO bound" if kind == "vae" else
                                    "exact density of dequantized data (an upper bound on the 8-bit NLL)")
        assert ("ELBO bound" if kind == "vae" else "exact density") in p.stdout
    p = run_cli("sample", str(run), "--steps", "10")
    assert p.returncode == 2 and "--steps is a diffusion setting" in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gan", "vae", "nf"])
def test_a_baseline_killed_mid_checkpoint_resumes_bit_for_bit(kind: str, tmp_path: Path):
    """SIGKILL while checkpoint 6 is being written, then --resume: weights, EMA and every optimizer (the GAN's two)
    equal a run trained straight through, bit for bit."""
    from safetensors.torch import load_file

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_BASELINE))
    common = ["train", "--method", kind, "--config", str(cfg), "--progress", "lines", *TINY_MODELS[kind]]
    full, split = tmp_path / "full", tmp_path / "split"
    p = run_cli(*common, "--steps", "10", "--out", str(full))
    assert p.returncode == 0, p.stderr
    killed = run_cli(*common, "--steps", "10", "--out", str(split), env={"DIFFUSIONLAB_FAULT": "checkpoint:tensors@6"})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    resumed = run_cli("train", "--resume", "--out", str(split))
    assert resumed.returncode == 0, resumed.stderr
    names = ["model", "ema", "optimizer"] + (["disc", "optimizer_disc"] if kind == "gan" else [])
    for name in names:
        a = load_file(str(full / "checkpoints" / "step_00000010" / f"{name}.safetensors"))
        b = load_file(str(split / "checkpoints" / "step_00000010" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after the kill"


def test_non_finite_samples_are_counted_not_hidden():
    """A sample that overflows (a flow's inverse at temperature 1, say) is counted and written as mid-grey; the CLI
    warns with the count (run_sample), and `evaluate --fid` records it."""
    from types import SimpleNamespace

    from diffusionlab.baselines import LoadedBaseline

    class Overflowing:
        name = "nf"

        @staticmethod
        def sample(net, n, g, y):
            x = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
            x[::3, 0, 1, 2] = float("inf")
            x[1::7, 0, 0, 0] = float("nan")
            return x

    run = LoadedBaseline(SimpleNamespace(model={"num_classes": None}), Overflowing, None, 0, Path("."))
    images = run.sample(30, seed=0, batch_size=8)
    expected = sum(len(set(range(0, b, 3)) | set(range(1, b, 7))) for b in (8, 8, 8, 6))  # the stub marks rows per batch
    assert run.nonfinite == expected and images.dtype == torch.uint8 and images.shape == (30, 1, 4, 4)
    assert int(images[1, 0, 0, 0]) in (127, 128)  # NaN -> mid-grey, visible rather than random
