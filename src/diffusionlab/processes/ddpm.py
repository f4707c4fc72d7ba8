"""The DDPM family (`--method ddpm`): discrete-time Gaussian diffusion (docs/maths.md sections 1-2; Ho et al. 2020,
Nichol & Dhariwal 2021).

Forward process q(x_t | x0), its posterior q(x_{t-1} | x_t, x0), the discrete path seen by the samplers, and the
training process: L_simple with an eps, x0 or v target, and Improved DDPM's learned variance with the hybrid or
L_vlb loss (the bound itself is in vlb.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser, Network
from ..errors import ConfigError
from ..prediction import Prediction, PredictionType, from_prediction, to_prediction
from ..schedules import SCHEDULES, SPACINGS, NoiseSchedule, make_schedule, spaced_timesteps
from ..validation import MAX_T
from .timesteps import LossSecondMomentSampler
from .base import Setting
from .vlb import VARIANCES, _at, bits_per_dim, reverse_mean, vlb_term

LOSSES = ("simple", "hybrid", "vlb")
TIMESTEP_SAMPLING = ("auto", "uniform", "importance", "lognormal")
# EDM's training noise levels (Karras et al. 2022, Table 1): ln sigma~ ~ N(P_mean, P_std^2), sigma~ = sigma / alpha.
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2
WEIGHTINGS = ("none", "min_snr")
DEFAULT_STEPS = 50  # DDIM-50 (Song et al. 2021, Table 1's middle column) unless the user says otherwise


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, a draw from q(x_t | x0) (DDPM eq. 4)."""
    # sqrt(1 - abar_t) in float64 before the cast: in float32, 1 - abar_t near t = 1 keeps only ~3 digits.
    return _at(schedule.alpha_bar.sqrt(), t, x0) * x0 + _at((1 - schedule.alpha_bar).sqrt(), t, x0) * eps


def q_posterior(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean mu~_t, variance beta~_t and clipped log-variance of q(x_{t-1} | x_t, x0) (DDPM eqs. 6-7)."""
    mean = reverse_mean(schedule, x0, x_t, t)
    var = _at(schedule.posterior_variance, t, x_t)
    log_var = _at(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, var, log_var


@dataclass(frozen=True)
class DiscreteVPPath:
    """The DDPM path seen by a Denoiser: alpha(t) = sqrt(abar_t), sigma(t) = sqrt(1 - abar_t), t in {0..T}.

    Between the integer steps the path is continued as k-diffusion does for discrete models: the log
    noise ratio log(sigma / alpha) is linear in t, so the continuous-time samplers can ask for any
    sigma~ in [sigma~(1), sigma~(T)] and the network is told a fractional t.
    """

    schedule: NoiseSchedule

    @property
    def t_noise(self) -> float:
        return float(self.schedule.T)

    @property
    def t_data(self) -> float:
        return 1.0

    @property
    def _log_ratio_table(self) -> Tensor:
        """log(sigma_t / alpha_t) = 0.5 log((1 - abar_t) / abar_t) for t = 1..T, increasing."""
        abar = self.schedule.alpha_bar[1:]
        return 0.5 * (torch.log1p(-abar) - torch.log(abar))

    def _rates(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) at t: the schedule's own at integer steps, log(sigma / alpha) linear in t between them."""
        abar = self.schedule.alpha_bar.to(t.device)[t.round().long()]
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        if bool((t == t.round()).all()):
            return alpha, sigma
        T, table = self.schedule.T, self._log_ratio_table.to(t.device)
        tc = t.to(torch.float64).clamp(1, T)
        lo = tc.floor().long().clamp(max=max(T - 1, 1))
        log_r = torch.lerp(table[lo - 1], table[(lo + 1).clamp(max=T) - 1], tc - lo)
        # alpha^2 + sigma^2 = 1 and sigma / alpha = r: alpha = 1 / sqrt(1 + r^2), sigma = r alpha.
        alpha_i = torch.exp(-0.5 * torch.nn.functional.softplus(2 * log_r))
        is_step = t == t.round()
        return torch.where(is_step, alpha, alpha_i), torch.where(is_step, sigma, alpha_i * log_r.exp())

    def alpha(self, t: Tensor) -> Tensor:
        return self._rates(t)[0]

    def sigma(self, t: Tensor) -> Tensor:
        return self._rates(t)[1]

    def d_alpha(self, t: Tensor) -> None:
        return None  # discrete time: no velocity parameterization

    def d_sigma(self, t: Tensor) -> None:
        return None

    def t_from_ratio(self, r: Tensor) -> Tensor:
        """The fractional step t with sigma(t) / alpha(t) = r: log r interpolated over t = 1..T (k-diffusion)."""
        table = self._log_ratio_table.to(r.device)
        if self.schedule.T == 1:
            return torch.ones_like(r, dtype=torch.float64)
        log_r = r.to(torch.float64).log()
        i = torch.searchsorted(table, log_r).clamp(1, self.schedule.T - 1)  # table[i-1] <= log r <= table[i]
        w = ((log_r - table[i - 1]) / (table[i] - table[i - 1])).clamp(0, 1)
        return i + w  # table index i - 1 is step t = i


class GaussianDiffusion:
    """DDPM / iDDPM training process: schedule, T, the network's target, reverse variance and loss.

    - `prediction`: what the network outputs (eps, x0 or v);
    - `variance`: Sigma_t of p_theta(x_{t-1} | x_t): fixed 'beta_tilde' or 'beta' (Ho et al. 2020), or
      'learned' (Nichol & Dhariwal 2021, eq. 15: the network emits 2C channels, the second C being v);
    - `loss`: 'simple' (L_simple, Ho et al. eq. 14), 'hybrid' (L_simple + lambda L_vlb with the mean's
      gradient stopped in L_vlb, iDDPM eq. 16) or 'vlb' (the variational bound itself);
    - `timestep_sampling`: t ~ U{1..T}, or by importance p_t ∝ sqrt(E[L_t^2]) (iDDPM section 3.3; 'auto' is
      importance for the vlb loss only).
    """

    method = "ddpm"
    time_scale = 1.0  # the network is told the integer step t itself
    default_sampler = "ddim"
    settings = (
        Setting("schedule", "cosine", str, "noise schedule", SCHEDULES),
        Setting("T", 1000, int, "number of diffusion steps T", flag="--timesteps", maximum=MAX_T),
        Setting("prediction", "eps", str, "network target", tuple(p.value for p in (PredictionType.EPS,
                                                                                  PredictionType.X0, PredictionType.V))),
        Setting("variance", "beta_tilde", str, "reverse variance (learned: iDDPM)", VARIANCES),
        Setting("loss", "simple", str, "training loss (hybrid: L_simple + vlb_weight L_vlb)", LOSSES),
        Setting("vlb_weight", 0.001, float, "lambda of the hybrid loss (iDDPM section 3.1)"),
        Setting("timestep_sampling", "auto", str, "law of t (auto: importance for loss vlb; lognormal: EDM's "
                "ln(sigma / alpha) ~ N(-1.2, 1.2^2), at the nearest step)", TIMESTEP_SAMPLING),
        Setting("weighting", "none", str, "weight of L_simple over t (min_snr: Min-SNR-gamma, Hang et al. 2023)",
                WEIGHTINGS),
        Setting("snr_gamma", 5.0, float, "gamma of the min_snr weighting (the paper's default: 5)"),
    )

    def __init__(self, schedule: str = "cosine", T: int = 1000, prediction: str = "eps", variance: str = "beta_tilde",
                 loss: str = "simple", vlb_weight: float = 0.001, timestep_sampling: str = "auto",
                 weighting: str = "none", snr_gamma: float = 5.0):
        self.schedule_name = schedule
        self.schedule = make_schedule(schedule, T)
        self.prediction = PredictionType.parse(prediction)
        if self.prediction.value not in self.settings[2].choices:  # type: ignore[operator]
            raise ConfigError(f"DDPM trains an eps, x0 or v prediction, not {prediction!r}")
        if variance not in VARIANCES:
            raise ConfigError(f"unknown variance {variance!r}; choose from {', '.join(VARIANCES)}")
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        if loss == "hybrid" and variance != "learned":
            raise ConfigError("the hybrid loss trains the learned variance; use variance 'learned' (or loss 'simple')")
        if not vlb_weight >= 0:
            raise ConfigError("vlb_weight must be >= 0")
        if timestep_sampling not in TIMESTEP_SAMPLING:
            raise ConfigError(f"timestep_sampling must be one of {', '.join(TIMESTEP_SAMPLING)}, got {timestep_sampling!r}")
        self.variance, self.loss_type, self.vlb_weight = variance, loss, float(vlb_weight)
        self.pixel_decoder = loss != "simple"  # L_vlb's L_0 is a discretized Gaussian over the 256 pixel bins
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        if not snr_gamma > 0:
            raise ConfigError(f"snr_gamma must be > 0, got {snr_gamma}")
        self.timestep_sampling, self.weighting, self.snr_gamma = timestep_sampling, weighting, float(snr_gamma)
        self.path = DiscreteVPPath(self.schedule)

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.schedule.T

    @property
    def learned_variance(self) -> bool:
        """Whether the network also outputs the reverse variance (2C output channels)."""
        return self.variance == "learned"

    def out_channels(self, channels: int) -> int:
        """Network output channels for images with `channels` channels."""
        return 2 * channels if self.learned_variance else channels

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (inverse of `GaussianDiffusion(**config)`)."""
        return {"schedule": self.schedule_name, "T": self.T, "prediction": self.prediction.value,
                "variance": self.variance, "loss": self.loss_type, "vlb_weight": self.vlb_weight,
                "timestep_sampling": self.timestep_sampling, "weighting": self.weighting, "snr_gamma": self.snr_gamma}

    def default_steps(self, sampler: str) -> int:
        """T for ancestral sampling (Algorithm 2 on the whole chain); else 50, at most T on DDIM's discrete grid."""
        if sampler == "ddpm":
            return self.T
        return min(DEFAULT_STEPS, self.T) if sampler == "ddim" else DEFAULT_STEPS

    def vp_schedule(self, steps: int, spacing: str = "uniform") -> NoiseSchedule:
        """The schedule respaced to `steps` of its T steps (iDDPM section 4; `spacing` uniform or quadratic)."""
        if spacing not in SPACINGS:
            raise ConfigError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
        if steps == self.T:
            return self.schedule
        return self.schedule.respace(spaced_timesteps(self.T, steps, spacing))

    def timestep_sampler(self) -> LossSecondMomentSampler | None:
        """The importance sampler of t for L_vlb (iDDPM section 3.3), when `timestep_sampling` asks for it."""
        if self.timestep_sampling == "importance" or (self.timestep_sampling == "auto" and self.loss_type == "vlb"):
            return LossSecondMomentSampler(self.T)
        return None

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training noise for a batch of data of `shape`: t ~ U{1..T} and eps ~ N(0, I) (Algorithm 1, lines 3-4); or,
        with timestep_sampling lognormal, the step nearest to EDM's sigma~ = exp(P_mean + P_std n), n ~ N(0, 1)."""
        if self.timestep_sampling == "lognormal":
            n = torch.randn(shape[0], generator=generator, dtype=torch.float64)
            t = self.path.t_from_ratio((EDM_P_MEAN + EDM_P_STD * n).exp()).round().long().clamp(1, self.T)
        else:
            t = torch.randint(1, self.T + 1, (shape[0],), generator=generator)
        eps = torch.randn(shape, generator=generator)
        return t, eps

    def target(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """What the network should output at x_t = q_sample(x0, t, eps)."""
        alpha, sigma = _at(self.schedule.alpha_bar.sqrt(), t, x0), _at((1 - self.schedule.alpha_bar).sqrt(), t, x0)
        return from_prediction(Prediction(x0, eps), self.prediction, alpha, sigma)

    def simple_weight(self, t: Tensor) -> Tensor:
        """The weight of L_simple at steps t: 1, or Min-SNR-gamma (Hang et al. 2023, eq. 6): min(SNR_t, gamma) on the
        x0 error, which is the `prediction`'s squared error times min(SNR, gamma) / SNR (eps), min(SNR, gamma) (x0) or
        min(SNR, gamma) / (SNR + 1) (v), since ||eps error||^2 = SNR ||x0 error||^2 and ||v error||^2 = (SNR + 1)
        ||x0 error||^2 at alpha^2 + sigma^2 = 1."""
        if self.weighting == "none":
            return torch.ones(t.shape, dtype=torch.float64, device=t.device)
        abar = self.schedule.alpha_bar.to(t.device, torch.float64)[t.long()]  # index t is step t (schedules.py)
        snr = abar / (1 - abar)
        per_x0 = {PredictionType.EPS: snr, PredictionType.X0: torch.ones_like(snr), PredictionType.V: snr + 1}
        return snr.clamp(max=self.snr_gamma) / per_x0[self.prediction]

    def loss(self, net: Network, x0: Tensor, t: Tensor, eps: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-example training loss at steps t (the configured L_simple, hybrid or L_vlb)."""
        x_t = q_sample(self.schedule, x0, t, eps)
        t_in = t.to(x0.dtype)
        out = net(x_t, t_in, y) if y is not None else net(x_t, t_in)
        v = None
        if self.learned_variance:
            out, v = out.chunk(2, dim=1)
        # Algorithm 1, line 5: || target - net(sqrt(abar) x0 + sqrt(1 - abar) eps, t) ||^2, mean over pixels.
        mse = ((out - self.target(x0, t, eps)) ** 2).flatten(1).mean(1)
        if self.weighting != "none":
            mse = mse * self.simple_weight(t).to(mse)
        if self.loss_type == "simple":
            return mse
        # One-sample estimate of L_vlb = sum_t L_{t-1}: T * L_{t-1} at the drawn t, in bits/dim.
        # Hybrid: the mean's gradient is stopped so L_vlb only trains the variance (iDDPM section 3.1).
        mean_out = out.detach() if self.loss_type == "hybrid" else out
        alpha, sigma = _at(self.schedule.alpha_bar.sqrt(), t, x0), _at((1 - self.schedule.alpha_bar).sqrt(), t, x0)
        pred = to_prediction(mean_out.float(), self.prediction, x_t.float(), alpha.float(), sigma.float())
        pred = Prediction(pred.x0, pred.eps, None if v is None else (v.float() + 1) / 2)
        l_vlb = self.T * bits_per_dim(vlb_term(self.schedule, x0.float(), x_t.float(), t, pred, self.variance), x0[0].numel())
        if self.loss_type == "hybrid":
            return mse + self.vlb_weight * l_vlb
        return l_vlb

    def denoiser(self, net: Network) -> Denoiser:
        """The sampler-facing model of a network trained by this process."""
        return Denoiser(net, self.prediction, self.path, learned_variance=self.learned_variance)
