"""Min-SNR-gamma loss weighting (Hang et al. 2023): whatever the network predicts, the weighted L_simple is
min(SNR_t, gamma) times the squared error of the implied x0_hat."""

from __future__ import annotations

import pytest
import torch

from diffusionlab.errors import ConfigError
from diffusionlab.prediction import to_prediction
from diffusionlab.processes.ddpm import GaussianDiffusion, q_sample
from diffusionlab.processes.vlb import _at


class Fixed(torch.nn.Module):
    """A 'network' returning a fixed output: the target plus a known error."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.out


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weights_the_x0_error_by_min_snr_gamma(prediction: str, gamma: float):
    g = torch.Generator().manual_seed(0)
    proc = GaussianDiffusion("cosine", 1000, prediction, weighting="min_snr", snr_gamma=gamma)
    x0 = torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (64,), generator=g)
    out = proc.target(x0, t, eps) + 0.1 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    loss = proc.loss(Fixed(out), x0, t, eps)
    alpha, sigma = _at(proc.schedule.alpha_bar.sqrt(), t, x0), _at((1 - proc.schedule.alpha_bar).sqrt(), t, x0)
    x0_hat = to_prediction(out, proc.prediction, q_sample(proc.schedule, x0, t, eps), alpha, sigma).x0
    abar = proc.schedule.alpha_bar[t]
    snr = abar / (1 - abar)
    expected = snr.clamp(max=gamma) * ((x0_hat - x0) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


def test_no_weighting_is_plain_l_simple():
    proc = GaussianDiffusion("cosine", 100, "v")
    t = torch.tensor([1, 50, 100])
    assert torch.equal(proc.simple_weight(t), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="snr_gamma"):
        GaussianDiffusion("cosine", 100, "v", weighting="min_snr", snr_gamma=0.0)
    with pytest.raises(ConfigError, match="weighting"):
        GaussianDiffusion("cosine", 100, "v", weighting="p2")


def test_lognormal_timesteps_follow_edm_noise_levels():
    """EDM's training law (Karras et al. 2022, Table 1: ln sigma~ ~ N(-1.2, 1.2^2)) carried to the nearest discrete
    step of the cosine schedule: the drawn steps' ln(sigma / alpha) has that mean and spread, to within the grid."""
    proc = GaussianDiffusion("cosine", 1000, "v", timestep_sampling="lognormal")
    t, _ = proc.draw((200_000, 1, 1, 1), torch.Generator().manual_seed(0))
    assert t.min() >= 1 and t.max() <= 1000 and t.dtype == torch.long
    abar = proc.schedule.alpha_bar[t]
    log_ratio = 0.5 * torch.log((1 - abar) / abar)
    # SE of the mean 1.2 / sqrt(2e5) = 0.003; the grid's steps are 0.01-0.02 apart in log sigma~ here.
    assert abs(log_ratio.mean().item() + 1.2) < 0.02, log_ratio.mean()
    assert abs(log_ratio.std().item() - 1.2) < 0.02, log_ratio.std()
    uniform, _ = GaussianDiffusion("cosine", 1000, "v").draw((200_000, 1, 1, 1), torch.Generator().manual_seed(0))
    assert abs(uniform.double().mean().item() - 500.5) < 3  # the default law is unchanged: U{1..T}
