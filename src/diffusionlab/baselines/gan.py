"""The generative adversarial network (Goodfellow et al. 2014; docs/maths.md section 9): the minimax game

    min_G max_D  E_x log D(x) + E_z log(1 - D(G(z))),

played with the non-saturating generator loss -E_z log D(G(z)) (their section 3: same fixed point, strong gradients
early on) and k discriminator steps per generator step (their Algorithm 1). For a fixed G the best discriminator
is D*(x) = p_data(x) / (p_data(x) + p_g(x)) (their Proposition 1). With D's logit l, log D = -softplus(-l) and
log(1 - D) = -softplus(l). An optional R1 penalty (gamma / 2) E_x ||grad_x l(x)||^2 on real data (Mescheder et al.
2018) keeps D from overshooting. G is the run's main network (its EMA is sampled); D and its Adam are `extra`.
A GAN has no likelihood: `evaluate --nll` refuses it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from pathlib import Path
from torch import Tensor, nn

from ..models.gan import Discriminator, GANConfig, Generator
from ..training.determinism import derive_seed
from ..training.loop import StepContext
from .config import BaselineRunConfig
from .kind import BaselineKind, BaselineTask

DISC_KEY = 4  # the discriminator's initial weights: a stream of their own (as the autoencoder's PatchGAN)


def discriminator_loss(disc: nn.Module, real: Tensor, fake: Tensor, y: Tensor | None = None,
                       r1_gamma: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """-E log D(real) - E log(1 - D(fake)) (+ the R1 penalty on real), and its parts for the log."""
    if r1_gamma > 0:
        real = real.detach().requires_grad_(True)
    logit_real, logit_fake = disc(real, y), disc(fake, y)
    loss = F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()
    parts = {"d_real": torch.sigmoid(logit_real).mean().detach(), "d_fake": torch.sigmoid(logit_fake).mean().detach()}
    if r1_gamma > 0:
        (grad,) = torch.autograd.grad(logit_real.sum(), real, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        loss = loss + 0.5 * r1_gamma * r1
        parts["r1"] = r1.detach()
    return loss, parts


def generator_loss(disc: nn.Module, fake: Tensor, y: Tensor | None = None) -> Tensor:
    """The non-saturating generator loss -E log D(G(z))."""
    return F.softplus(-disc(fake, y)).mean()


class GANTask(BaselineTask):
    """Algorithm 1 of Goodfellow et al.: k discriminator steps (each on a fresh batch of data and of z), then one
    generator step. Every draw comes from the step's generator: a resumed run repeats them bit for bit."""

    def __init__(self, cfg: BaselineRunConfig, run_dir: Path, accelerator: Accelerator):
        super().__init__(cfg, run_dir, accelerator)
        tc, obj = cfg.train, self.objective
        torch.manual_seed(derive_seed(tc.seed, DISC_KEY))
        disc = Discriminator(GANConfig.from_dict(cfg.model))
        disc_lr = obj.disc_lr if obj.disc_lr is not None else tc.lr
        self.extra["disc"] = (disc, torch.optim.Adam(disc.parameters(), lr=disc_lr, betas=tc.adam_betas))
        self.base_lr["disc"] = disc_lr
        self.latent_dim = self.network_config.latent_dim

    def step(self, ctx: StepContext) -> dict[str, Tensor]:
        """k discriminator steps, then one generator step with the non-saturating loss."""
        tc, obj, g = self.cfg.train, self.objective, ctx.generator
        disc, disc_opt = self.extra["disc"]
        B = tc.batch_size
        parts: dict[str, Tensor] = {}
        for k in range(obj.d_steps):
            # Algorithm 1: each discriminator step samples m examples and m noise vectors; the step's own batch first.
            indices = None if k == 0 else torch.randint(self.num_examples, (B,), generator=g)
            real, y = self.batch(ctx, indices)
            z = torch.randn(B, self.latent_dim, generator=g)[ctx.mine].to(ctx.device)
            with ctx.autocast():
                with torch.no_grad():
                    fake = self.model(z, y)
                d_loss, parts = discriminator_loss(disc, real, fake, y, obj.r1_gamma)
            ctx.backward(d_loss)
            ctx.apply(disc_opt, disc.parameters(), d_loss, tc.grad_clip)
        z = torch.randn(B, self.latent_dim, generator=g)[ctx.mine].to(ctx.device)
        y = None
        if self.cfg.train.class_conditional:  # the generator's labels: drawn from the data's
            pick = torch.randint(self.num_examples, (B,), generator=g)[ctx.mine]
            y = self.data.labels[pick].to(ctx.device)
        with ctx.autocast():
            g_loss = generator_loss(disc, self.model(z, y), y)
        ctx.backward(g_loss)
        ctx.apply(self.optimizer, self.model.parameters(), g_loss, tc.grad_clip)
        disc_opt.zero_grad(set_to_none=True)  # the generator's backward also reached D: those gradients are not D's
        return {"loss": g_loss.detach(), "d_loss": d_loss.detach(), **parts}


class GAN(BaselineKind):
    """The DCGAN generator and discriminator."""

    name = "gan"
    title = "generative adversarial network (Goodfellow et al. 2014; DCGAN, Radford et al. 2016)"
    nll = None
    task = GANTask

    @classmethod
    def network(cls, model: dict[str, Any]) -> nn.Module:
        """The generator of the model section."""
        return Generator(GANConfig.from_dict(model))

    @staticmethod
    def sample(net: nn.Module, n: int, g: torch.Generator, y: Tensor | None) -> Tensor:
        """G(z) for z ~ N(0, I) (batch norm with its running statistics: each image independent of the batch)."""
        dev = next(net.parameters()).device
        z = torch.randn(n, net.config.latent_dim, generator=g).to(dev)
        return net(z, y)

    @staticmethod
    def bits_per_dim(net: nn.Module, images: Tensor, y: Tensor | None, g: torch.Generator) -> Tensor:
        """A GAN defines no density."""
        raise NotImplementedError("a GAN has no likelihood")


__all__ = ["GAN", "GANTask", "discriminator_loss", "generator_loss"]
