"""Negative log-likelihood in bits/dim from the variational bound (docs/maths.md sections 1 and 10).

For each test image x0 every term of L = L_T + sum_{t>=2} L_{t-1} + L_0 is estimated with one draw
x_t ~ q(x_t | x0) per step (Ho et al. 2020 eq. 5; the iDDPM reference evaluation does the same), so
the bound costs K network evaluations per image on a K-step (possibly respaced) schedule. Because the
decoder L_0 is discrete over the 256 pixel bins, the result is a bound on the discrete NLL of 8-bit
images and is comparable with other models' bits/dim on the same data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..codecs import Codec, PixelCodec
from ..data import to_model_range
from ..denoiser import Denoiser
from ..errors import ConfigError
from ..processes.base import Process
from ..processes.ddpm import q_sample
from ..processes.vlb import bits_per_dim, prior_kl, vlb_term
from ..samplers.common import predict
from ..training.determinism import generator


@dataclass
class BoundResult:
    """The bound in bits/dim with its parts; `per_step_bpd[k-1]` is L_{k-1} (k = 1 is the decoder L_0)."""

    bits_per_dim: float
    std_error: float  # standard error of the mean over images
    prior_bpd: float  # L_T
    diffusion_bpd: float  # sum_{t>=2} L_{t-1}
    decoder_bpd: float  # L_0 = -log p(x0 | x1)
    n_images: int
    steps: int  # K terms: the schedule the bound was computed on
    nfe_per_image: int
    variance: str
    clip_x0: bool
    per_step_bpd: list[float] = field(default_factory=list)
    space: str = "pixels"  # or "latents": bits per latent dimension of a continuous density, not a pixel likelihood
    timesteps: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def require_bound(process: Process) -> None:
    """A one-line error unless the process has DDPM's discrete bound (docs/maths.md section 1 sums its KL terms)."""
    if process.T is None:
        raise ConfigError(f"the variational bound needs a discrete DDPM model; for method {process.method} "
                          f"use --nll --ode (the probability-flow ODE NLL)")


@torch.no_grad()
def variational_bound(
    denoiser: Denoiser,
    process: Process,
    images: Tensor,
    *,
    steps: int | None = None,
    spacing: str = "uniform",
    variance: str | None = None,
    clip_x0: bool = True,
    batch_size: int = 256,
    seed: int = 0,
    y: Tensor | None = None,
    codec: Codec | None = None,
    progress: bool = False,
) -> BoundResult:
    """Bits/dim of uint8 images (N, C, H, W) under the model's variational bound on `steps` steps (default T).

    With a latent codec the bound is on the latents z = E(x) (the posterior means), with the continuous decoder
    N(z; mu, Sigma_1): bits per latent dimension of the model's density of z, which is not a pixel likelihood.
    """
    codec = codec or PixelCodec()
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ConfigError("the bound is computed on uint8 images (N, C, H, W)")
    if len(images) == 0:
        raise ConfigError("no images to evaluate")
    require_bound(process)
    schedule = process.vp_schedule(process.T if steps is None else steps, spacing)
    variance = variance or process.variance
    D = int(torch.Size(codec.latent_shape(tuple(images.shape[1:]))).numel())
    K = schedule.T
    decoder = "discretized" if codec.pixel_space else "gaussian"
    clip = codec.x0_clip if clip_x0 else None
    abar = schedule.alpha_bar
    per_step = torch.zeros(K + 1, dtype=torch.float64)  # summed over images, in nats
    totals = []
    prior_sum = 0.0
    batches = list(range(0, len(images), batch_size))
    bar = tqdm(total=len(batches) * K, desc="bound", disable=not progress, dynamic_ncols=True)
    for b, start in enumerate(batches):
        x0 = codec.encode(to_model_range(images[start : start + batch_size])).float()
        yb = None if y is None else y[start : start + batch_size]
        model = denoiser.vp(yb)
        g = generator(seed, 2, b)
        prior = prior_kl(schedule, x0.double()).float()  # L_T: no network
        total = prior.double().clone()
        for k in range(K, 0, -1):
            eps = torch.randn(x0.shape, generator=g)
            x_k = q_sample(schedule, x0, torch.full((len(x0),), k), eps)
            pred = predict(model, x_k, schedule.timesteps[k], abar[k], clip)
            term = vlb_term(schedule, x0, x_k, torch.tensor(k), pred, variance, decoder).double()
            per_step[k] += term.sum()
            total += term
            bar.update(1)
        prior_sum += float(prior.double().sum())
        totals.append(total)
    bar.close()
    total = torch.cat(totals)
    n = len(total)
    bpd = bits_per_dim(total, D)
    to_bpd = 1.0 / (n * D * math.log(2.0))
    return BoundResult(
        bits_per_dim=float(bpd.mean()),
        std_error=float(bpd.std() / math.sqrt(n)) if n > 1 else float("nan"),
        prior_bpd=prior_sum * to_bpd,
        diffusion_bpd=float(per_step[2:].sum()) * to_bpd,
        decoder_bpd=float(per_step[1]) * to_bpd,
        n_images=n,
        steps=K,
        nfe_per_image=K,
        variance=variance,
        clip_x0=clip_x0,
        per_step_bpd=[float(v) * to_bpd for v in per_step[1:]],
        timesteps=[int(t) for t in schedule.timesteps[1:]],
        space="pixels" if codec.pixel_space else "latents",
    )
