"""The normalizing flow (Glow, Kingma & Dhariwal 2018; docs/maths.md section 9), trained by maximum likelihood of
uniformly dequantized data (Theis et al. 2016; Ho et al. 2019, section 3.1):

    y = k + u, u ~ U[0, 1)^D, for 8-bit pixels k;  x = y * 2 / 256 - 1 in [-1, 1)
    -log2 P(k) <= E_u[-log2 p_y(y)] = E_u[-log2 p_x(x)] - D log2(2 / 256),

so bits/dim = -log p_x(x) / (D ln 2) + 7: the flow's density is exact, and with the dequantization noise it is an
upper bound on the discrete NLL (the same "dequantized 8-bit" quantity as diffusion's probability-flow NLL).
A sample is x = f^-1(z) for z from the prior, mapped back to the bin it falls in.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..models.glow import Glow, GlowConfig, initialize, initialized
from ..training.loop import StepContext
from .kind import BaselineKind, BaselineTask

BITS_OFFSET = math.log2(256 / 2)  # -log2 of the Jacobian of x = y * 2 / 256 - 1, per dimension


def dequantize(images: Tensor, u: Tensor) -> Tensor:
    """x = (k + u) * 2 / 256 - 1 for uint8 pixels k and u in [0, 1)."""
    return (images.to(u.dtype) + u) * (2.0 / 256.0) - 1.0


def quantize(x: Tensor) -> Tensor:
    """The bin of x (the inverse of `dequantize` up to u), as its 8-bit value k / 127.5 - 1 in the model range."""
    k = torch.floor((x + 1.0) * 128.0).clamp(0, 255)
    return torch.where(torch.isfinite(x), k / 127.5 - 1.0, x)  # a non-finite sample stays so: the caller counts it


def flow_bits_per_dim(net: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """-log2 p_y(y) / D per image for dequantized x = dequantize(k, u); net(x, y) = log p_x(x) (a Glow, or its
    data-parallel wrapper)."""
    return -net(x, y) / (x[0].numel() * math.log(2)) + BITS_OFFSET


class FlowTask(BaselineTask):
    """One step: dequantize the batch with u from the step's generator, a gradient step on its bits/dim."""

    def step(self, ctx: StepContext) -> dict[str, Tensor]:
        """Maximum likelihood: minimise E[-log2 p(x)] / D of the dequantized batch."""
        tc = self.cfg.train
        u = torch.rand(tc.batch_size, *self.data.shape, generator=ctx.generator)
        x = dequantize(self.data.images[ctx.indices], u)  # the whole global batch (every process draws it all)
        if self.cfg.data.hflip:
            flip = torch.rand(tc.batch_size, generator=ctx.generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        labels = self.data.labels[ctx.indices] if tc.class_conditional else None
        raw = ctx.accelerator.unwrap_model(self.model)
        if not initialized(raw):  # Glow's actnorm initialisation, on the global batch: the same on every process
            initialize(raw, x.to(ctx.device), None if labels is None else labels.to(ctx.device))
        x = x[ctx.mine]
        y = None if labels is None else labels[ctx.mine].to(ctx.device)
        with ctx.autocast():
            loss = flow_bits_per_dim(self.model, x.to(ctx.device), y).mean()
        ctx.backward(loss)
        ctx.apply(self.optimizer, self.model.parameters(), loss, tc.grad_clip)
        return {"loss": loss.detach()}


class NormalizingFlow(BaselineKind):
    """Glow on dequantized pixels."""

    name = "nf"
    title = "normalizing flow (Glow, Kingma & Dhariwal 2018; blocks from normflows)"
    nll = "exact density of dequantized data (an upper bound on the 8-bit NLL)"
    task = FlowTask
    # Its likelihood is a sum of log-determinants over every layer, and its sampler inverts each layer exactly:
    # bf16's 8-bit mantissa would round both, so auto keeps float32 (bf16 only when asked for).
    auto_bf16 = False

    @classmethod
    def network(cls, model: dict[str, Any]) -> nn.Module:
        """Glow of the model section."""
        return Glow(GlowConfig.from_dict(model))

    @staticmethod
    def sample(net: nn.Module, n: int, g: torch.Generator, y: Tensor | None) -> Tensor:
        """f^-1(z) for z from the prior, quantized to its bin (normflows draws z from torch's global generator, so it
        is forked and seeded from `g`: the caller's global stream is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(1 << 62, (1,), generator=g)))
            return quantize(net.sample(n, y))

    @staticmethod
    def bits_per_dim(net: nn.Module, images: Tensor, y: Tensor | None, g: torch.Generator) -> Tensor:
        """-log2 p(x) / D of the images dequantized with one u each (plus 7: the 8-bit scale)."""
        dev = next(net.parameters()).device
        u = torch.rand(images.shape, generator=g)
        return flow_bits_per_dim(net, dequantize(images, u).to(dev), y)


__all__ = ["BITS_OFFSET", "FlowTask", "NormalizingFlow", "dequantize", "flow_bits_per_dim", "quantize"]
