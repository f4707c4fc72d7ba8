"""The variational autoencoder (Kingma & Welling 2014; docs/maths.md section 9): trained on the negative ELBO,

    -ELBO(x) = -E_{q(z|x)} log p(x | z) + KL(q(z | x) || N(0, I))  >=  -log p(x),

with the reparameterization z = mu + sigma * e, e ~ N(0, I), and a decoder likelihood over the 256 bins of 8-bit
pixels, so the ELBO is a bound on the discrete log-likelihood and -ELBO / (D ln 2) is comparable with every other
family's bits/dim. The decoders:
- "logistic": PixelCNN++'s discretized logistic (Salimans et al. 2017, eq. 2), one per pixel;
- "gaussian": the discretized Gaussian of DDPM's L_0 (processes/vlb.py);
- "bernoulli": a Bernoulli over the binarized pixel (x > 127): its bits/dim are of binarized data, not 8-bit.
Samples are the decoder's mean E[x | z] for z ~ N(0, I), as is customary (drawing the per-pixel noise as well adds
independent speckle); the NLL is the ELBO of the 8-bit data itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import to_model_range
from ..models.vae import ConvVAE, VAEConfig
from ..processes.vlb import BIN, discretized_gaussian_log_likelihood
from ..training.loop import StepContext
from .kind import BaselineKind, BaselineTask

LOG_SCALE_MIN = -7.0  # PixelCNN++'s floor of the logistic's log-scale (a bin is 2 / 255 wide)


def discretized_logistic_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise log P(bin of x) under Logistic(mean, exp(log_scale)) cut into 256 bins on [-1, 1], the outer bins
    reaching -inf and +inf (Salimans et al. 2017, eq. 2).

    With a = (x + 1/255 - mean) / s and b = (x - 1/255 - mean) / s, the interior bin's probability is
    sigmoid(a) - sigmoid(b) = e^a (1 - e^(b - a)) / ((1 + e^a)(1 + e^b)), whose log is computed as
    logsigmoid(a) - softplus(b) + log(1 - e^-(a - b)): no difference of nearly equal numbers, at any scale.
    """
    inv_s = torch.exp(-log_scale)
    a = (x - mean + BIN) * inv_s
    b = (x - mean - BIN) * inv_s
    mid = F.logsigmoid(a) - F.softplus(b) + torch.log(-torch.expm1(-(a - b)))
    return torch.where(x < -1 + BIN, F.logsigmoid(a), torch.where(x > 1 - BIN, -F.softplus(b), mid))


def decoder_log_likelihood(likelihood: str, x: Tensor, params: Tensor) -> Tensor:
    """log p(x | z) per example (summed over pixels) for x in [-1, 1] on the 8-bit grid and the decoder's output."""
    if likelihood == "bernoulli":
        target = (x > 0).to(params.dtype)
        ll = -F.binary_cross_entropy_with_logits(params, target, reduction="none")
    else:
        mean, log_scale = params.chunk(2, dim=1)
        if likelihood == "logistic":
            ll = discretized_logistic_log_likelihood(x, mean, log_scale.clamp(min=LOG_SCALE_MIN))
        else:
            ll = discretized_gaussian_log_likelihood(x, mean, log_scale.clamp(min=LOG_SCALE_MIN))
    return ll.flatten(1).sum(1)


def decoder_mean(likelihood: str, params: Tensor) -> Tensor:
    """E[x | z] in [-1, 1]."""
    if likelihood == "bernoulli":
        return 2 * torch.sigmoid(params) - 1
    return params.chunk(2, dim=1)[0].clamp(-1, 1)


def vae_terms(net: nn.Module, x: Tensor, noise: Tensor, y: Tensor | None, likelihood: str) -> tuple[Tensor, Tensor]:
    """(log p(x | z), KL) per image of the VAE `net` (or its data-parallel wrapper) at images x in [-1, 1]: its
    forward, models.vae.elbo_terms, with this decoder likelihood."""
    return net(x, noise, y, lambda params: decoder_log_likelihood(likelihood, x, params))


class VAETask(BaselineTask):
    """One step: z by reparameterization from the step's generator, a gradient step on -ELBO (KL times beta)."""

    def step(self, ctx: StepContext) -> dict[str, Tensor]:
        """One gradient step on the (beta-weighted) negative ELBO, in nats per dimension."""
        obj, tc = self.objective, self.cfg.train
        noise = torch.randn(tc.batch_size, self.network_config.latent_dim, generator=ctx.generator)[ctx.mine]
        x, y = self.batch(ctx)
        beta = obj.kl_weight * min(1.0, ctx.step / obj.kl_warmup_steps) if obj.kl_warmup_steps else obj.kl_weight
        with ctx.autocast():
            log_px, kl = vae_terms(self.model, x, noise.to(ctx.device), y, self.network_config.likelihood)
            loss = (beta * kl - log_px).mean() / self.dims
        ctx.backward(loss)
        ctx.apply(self.optimizer, self.model.parameters(), loss, tc.grad_clip)
        bpd = ((kl - log_px).detach().mean() / (self.dims * math.log(2)))
        return {"loss": loss.detach(), "elbo_bpd": bpd, "kl_bpd": kl.detach().mean() / (self.dims * math.log(2))}


class VAE(BaselineKind):
    """The variational autoencoder."""

    name = "vae"
    title = "variational autoencoder (Kingma & Welling 2014)"
    nll = "ELBO bound"
    task = VAETask

    @classmethod
    def network(cls, model: dict[str, Any]) -> nn.Module:
        """ConvVAE of the model section."""
        return ConvVAE(VAEConfig.from_dict(model))

    @staticmethod
    def sample(net: nn.Module, n: int, g: torch.Generator, y: Tensor | None) -> Tensor:
        """E[x | z] for z ~ N(0, I)."""
        dev = next(net.parameters()).device
        z = torch.randn(n, net.config.latent_dim, generator=g).to(dev)
        return decoder_mean(net.config.likelihood, net.decode(z, y))

    @staticmethod
    def bits_per_dim(net: nn.Module, images: Tensor, y: Tensor | None, g: torch.Generator) -> Tensor:
        """-ELBO / (D ln 2), one z per image."""
        dev = next(net.parameters()).device
        x = to_model_range(images).to(dev)
        noise = torch.randn(len(x), net.config.latent_dim, generator=g).to(dev)
        log_px, kl = vae_terms(net, x, noise, y, net.config.likelihood)
        return (kl - log_px) / (x[0].numel() * math.log(2))


__all__ = ["VAE", "VAETask", "decoder_log_likelihood", "decoder_mean", "discretized_logistic_log_likelihood",
           "vae_terms"]
