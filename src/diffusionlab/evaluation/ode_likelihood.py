"""Exact negative log-likelihood through the probability-flow ODE (Song et al. 2021, appendix D.2), in bits/dim.

The PF-ODE is a continuous normalizing flow: along a trajectory x(u), d log p_u(x(u)) / du = -div f(x(u), u)
(Chen et al. 2018, "Neural ODEs", Theorem 1). It is integrated in VE coordinates, where every Gaussian path
has the same ODE (Karras et al. 2022, eq. 4), in the variable u = log sigma:

    dx~/du = sigma dx~/dsigma = x~ - D(x~, sigma),

from the data end sigma_min to the noise end sigma_max, carrying the integral of the divergence. Then

    log p(x~ at sigma_min) = log N(x~(sigma_max); 0, (1 + sigma_max^2) I) + integral div (x~ - D) du,

where the prior is N(0, (alpha^2 + sigma^2) I) in the path's own coordinates x_t = alpha x~ (N(0, I) for a VP
path), seen in VE coordinates. Every model reaches it through `Denoiser.sigma_model()`, the discrete DDPM path
included. The divergence is exact (D backward passes, for tiny D) or Hutchinson's unbiased estimate
E_v[v^T (df/dx) v] with one Rademacher or Gaussian probe v per example, fixed along the trajectory (FFJORD,
Grathwohl et al. 2019) and drawn from a seeded torch.Generator.

Images: the model density is of x = x_{t_data} = alpha(t_data) x~, so log p(x) = log p(x~) - D log alpha(t_data).
8-bit data are uniformly dequantized: the pixel k in {0..255} maps to k / 127.5 - 1 in [-1, 1] (bin width
w = 2/255), and x = that + (u - 1/2) w with u ~ U(0, 1)^D. Then -log P(k) <= -E_u log p(x) - D log w (Jensen),
so bits/dim = (-log p(x) - D log w) / (D ln 2) is an upper bound on the discrete NLL of the 8-bit images,
comparable with the DDPM variational bound (whose decoder uses the same bins).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..codecs import Codec, PixelCodec
from ..data import to_model_range
from ..denoiser import Denoiser, SigmaModel
from ..errors import ConfigError
from ..samplers import NFECounter, solve_ode
from ..training.determinism import generator

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
BIN_WIDTH = 2 / 255  # one 8-bit level in the [-1, 1] scaling of to_model_range


def _probe(x: Tensor, kind: str, generator: torch.Generator | None) -> Tensor:
    """Hutchinson's probe: E[v v^T] = I with Rademacher (+-1) or standard normal entries."""
    if kind == "rademacher":
        return (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x)
    if kind == "gaussian":
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    raise ConfigError(f"unknown probe {kind!r}; choose from {', '.join(PROBES)}")


def ode_log_likelihood(model: SigmaModel, x: Tensor, sigma_min: float, sigma_max: float, *, steps: int = 50,
                       method: str = "heun", rtol: float = 1e-5, divergence: str = "hutchinson",
                       probe: str = "rademacher", generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """log p(x~) at sigma_min per example (nats, shape (B,)) by the PF-ODE to sigma_max, and the NFE it took."""
    if divergence not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {divergence!r}; choose from {', '.join(DIVERGENCES)}")
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ConfigError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    shape, B, D = x.shape, x.shape[0], x[0].numel()
    v = _probe(x, probe, generator) if divergence == "hutchinson" else None
    counter = NFECounter(model)

    def field(state: Tensor, u: Tensor) -> Tensor:
        """d/du of (x~, the divergence integral): (x~ - D(x~, e^u), div_x (x~ - D))."""
        with torch.enable_grad():
            xs = state[:, :D].reshape(shape).detach().requires_grad_(True)
            g = xs - counter(xs, u.exp())
            if v is not None:  # v^T (dg/dx) v by one vector-Jacobian product
                (vjp,) = torch.autograd.grad(g, xs, v)
                div = (vjp * v).flatten(1).sum(1)
            else:  # the trace of dg/dx, one row of the Jacobian per backward pass
                g_flat = g.flatten(1)
                div = torch.stack([torch.autograd.grad(g_flat[:, i].sum(), xs, retain_graph=i < D - 1)[0].flatten(1)[:, i]
                                   for i in range(D)], 1).sum(1)
        return torch.cat([g.detach().flatten(1), div.detach()[:, None]], 1)

    us = torch.linspace(math.log(sigma_min), math.log(sigma_max), steps + 1, dtype=torch.float64)
    state = torch.cat([x.flatten(1), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], 1)
    state = solve_ode(field, state, us, method, rtol=rtol, atol=rtol)
    x_end, div_integral = state[:, :D], state[:, D]
    var = 1 + sigma_max**2  # the prior N(0, (1 + sigma_max^2) I) in VE coordinates
    log_prior = -0.5 * (x_end.double() ** 2).sum(1) / var - 0.5 * D * math.log(2 * math.pi * var)
    return log_prior + div_integral.double(), counter.nfe


def data_log_likelihood(denoiser: Denoiser, x: Tensor, *, y: Tensor | None = None, **options: Any) -> tuple[Tensor, int]:
    """log p(x) (nats, per example) of continuous data x in the model's coordinates, over the model's sigma range."""
    sigma_min, sigma_max = denoiser.sigma_range()
    _, t_data = denoiser.time_range()
    alpha = float(denoiser.path.alpha(torch.tensor([t_data], dtype=torch.float64))[0])
    # x = alpha(t_data) x~: the change of variables costs D log alpha(t_data)
    logp, nfe = ode_log_likelihood(denoiser.sigma_model(y), x / alpha, sigma_min, sigma_max, **options)
    return logp - x[0].numel() * math.log(alpha), nfe


@dataclass
class ODELikelihoodResult:
    """Bits/dim of 8-bit images under the PF-ODE (dequantized), with its standard error over images."""

    bits_per_dim: float
    std_error: float
    n_images: int
    nfe_per_image: int
    steps: int
    method: str
    divergence: str
    sigma_min: float
    sigma_max: float
    space: str = "pixels"  # or "latents": bits per latent dimension of a continuous density, not a pixel likelihood

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def ode_bits_per_dim(denoiser: Denoiser, images: Tensor, *, steps: int = 50, method: str = "heun", rtol: float = 1e-5,
                     divergence: str = "hutchinson", probe: str = "rademacher", seed: int = 0, batch_size: int = 256,
                     y: Tensor | None = None, codec: Codec | None = None, progress: bool = False) -> ODELikelihoodResult:
    """Bits/dim of uint8 images (N, C, H, W) by the PF-ODE, uniformly dequantized (see the module docstring).

    With a latent codec: -log p(z) of the latents z = E(x) (posterior means) per latent dimension, a continuous
    density without dequantization, which is not a pixel likelihood.
    """
    codec = codec or PixelCodec()
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ConfigError("the ODE likelihood is computed on uint8 images (N, C, H, W)")
    if len(images) == 0:
        raise ConfigError("no images to evaluate")
    D = int(torch.Size(codec.latent_shape(tuple(images.shape[1:]))).numel())
    bpd, nfe = [], 0
    for b, start in enumerate(tqdm(range(0, len(images), batch_size), desc="ODE NLL", disable=not progress)):
        g = generator(seed, 3, b)
        x = to_model_range(images[start : start + batch_size])
        if codec.pixel_space:
            x = x + (torch.rand(x.shape, generator=g) - 0.5) * BIN_WIDTH  # uniform dequantization
        else:
            x = codec.encode(x)
        yb = None if y is None else y[start : start + batch_size]
        logp, nfe_b = data_log_likelihood(denoiser, x, y=yb, steps=steps, method=method, rtol=rtol,
                                          divergence=divergence, probe=probe, generator=g)
        nfe = max(nfe, nfe_b)
        bins = D * math.log(BIN_WIDTH) if codec.pixel_space else 0.0  # -log P(bin) <= -log p(x) - D log w
        bpd.append((-logp - bins) / (D * math.log(2)))
    all_bpd = torch.cat(bpd)
    n = len(all_bpd)
    s_min, s_max = denoiser.sigma_range()
    return ODELikelihoodResult(
        bits_per_dim=float(all_bpd.mean()),
        std_error=float(all_bpd.std() / math.sqrt(n)) if n > 1 else float("nan"),
        n_images=n, nfe_per_image=nfe, steps=steps, method=method, divergence=divergence, sigma_min=s_min, sigma_max=s_max,
        space="pixels" if codec.pixel_space else "latents",
    )
