"""The training task of the KL autoencoder, the first stage of latent diffusion (Rombach et al. 2022, section 3 and
appendix G; LDM's `LPIPSWithDiscriminator`, with our own feature network in place of LPIPS).

One step, for a batch x:
    q(z | x) = E(x),  z = mean + std * e (e from the step's generator),  x^ = D(z)
    L_AE = sum_pixels |x - x^| (+ w_p * d_feat(x, x^)) + w_KL * KL(q(z | x) || N(0, I))     (means over the batch)
and, from step `disc_start` on, a PatchGAN D_psi trained with the hinge loss, whose generator term
-E[D_psi(x^)] joins L_AE with LDM's adaptive weight w_d = disc_weight * ||grad L_rec|| / ||grad L_G|| (both
gradients at the decoder's last layer, their eq. 7 of Esser et al. 2021). Two networks, two optimizers: the
autoencoder is `model` (its EMA is what the latent codec uses), the discriminator is in `extra`.

At every checkpoint the latent scale factor s = 1 / std(z) is measured with the EMA weights on (up to 4096 of) the
training images and saved in state.json (LDM's `scale_factor`): the codec of a latent run reads it from there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn

from ..data import from_model_range, load_dataset, to_model_range
from ..models.autoencoder import AutoencoderConfig, AutoencoderKL, PatchDiscriminator
from ..viz import save_grid
from .config import AutoencoderRunConfig
from .determinism import derive_seed
from .loop import INIT_KEY, StepContext

DISC_KEY = 4  # the discriminator's initial weights: a stream of their own, so adding it never moves the autoencoder's
SCALE_IMAGES = 4096  # training images the latent scale factor is measured on
SCALE_SEED = 0x5CA1E


def fill_autoencoder_config(cfg: AutoencoderRunConfig, shape: tuple[int, int, int]) -> AutoencoderConfig:
    """Complete the `model` section with the data's size and channels, and check it (one-line errors)."""
    channels, height, width = shape
    cfg.model["image_size"] = height if height == width else [height, width]
    cfg.model["in_channels"] = channels
    return AutoencoderConfig.from_dict(cfg.model)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The discriminator's hinge loss (Lim & Ye 2017), as LDM: (E relu(1 - D(x)) + E relu(1 + D(x^))) / 2."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
    """||grad_last L_rec|| / (||grad_last L_G|| + 1e-4), clamped to [0, 1e4] and detached (Esser et al. 2021, eq. 7)."""
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


@torch.no_grad()
def latent_statistics(model: AutoencoderKL, images: Tensor, batch_size: int = 512) -> dict[str, float]:
    """Mean, std and scale factor 1 / std of z ~ q(z | x) over `images` (uint8), with a fixed private generator."""
    g = torch.Generator().manual_seed(SCALE_SEED)
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(images), batch_size):
        q = model.encode(to_model_range(images[start : start + batch_size]))
        z = q.sample(torch.randn(q.mean.shape, generator=g)).double()
        total, total_sq, count = total + float(z.sum()), total_sq + float((z**2).sum()), count + z.numel()
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 0.0))
    return {"mean": mean, "std": std, "scale_factor": 1.0 / std if std > 0 else float("nan"), "n_images": len(images)}


class AutoencoderTask:
    """Trains `AutoencoderKL` (and, from `disc_start`, a `PatchDiscriminator`) on the run's images."""

    def __init__(self, cfg: AutoencoderRunConfig, run_dir: Path, accelerator: Accelerator):
        tc, lc = cfg.train, cfg.loss
        self.data = load_dataset(cfg.data.source, cfg.data.data_dir, cfg.data.split, cfg.data.image_size,
                                 cfg.data.channels)
        self.model_config = model_cfg = fill_autoencoder_config(cfg, self.data.shape)
        self.cfg, self.config = cfg, cfg.to_dict()
        self.feature_distance = None
        if lc.perceptual_weight > 0:
            self.feature_distance = self._feature_network().to(accelerator.device)
        torch.manual_seed(derive_seed(tc.seed, INIT_KEY))
        self.model = AutoencoderKL(model_cfg)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, betas=tc.adam_betas,
                                          weight_decay=tc.weight_decay)
        self.base_lr = {"model": tc.lr}
        self.extra: dict[str, Any] = {}
        if lc.disc_start is not None:
            torch.manual_seed(derive_seed(tc.seed, DISC_KEY))
            disc = PatchDiscriminator(model_cfg.in_channels, n_layers=lc.disc_layers)
            disc_lr = lc.disc_lr if lc.disc_lr is not None else tc.lr
            self.extra["disc"] = (disc, torch.optim.Adam(disc.parameters(), lr=disc_lr, betas=tc.adam_betas))
            self.base_lr["disc"] = disc_lr
        self.files: dict[str, bytes] = {}
        self.num_examples = len(self.data)
        c, h, w = model_cfg.latent_shape
        self.description = (f"autoencoder on {self.data.name} ({len(self.data)} images {self.data.shape}) -> latents "
                            f"{c}x{h}x{w}, f = {model_cfg.factor}")

    def _feature_network(self) -> nn.Module:
        """The perceptual distance's frozen feature network: the domain classifier of the data (cached)."""
        from ..evaluation.extractors import domain_extractor
        from ..models.perceptual import FeatureDistance

        d = self.cfg.data
        train = self.data if d.split == "train" else load_dataset(d.source, d.data_dir, "train", d.image_size, d.channels)
        return FeatureDistance(domain_extractor(train, progress=True).model.body)

    def step(self, ctx: StepContext) -> dict[str, Tensor]:
        """One step of the autoencoder and, once it is on, one of the discriminator."""
        tc, lc, g, mine, dev = self.cfg.train, self.cfg.loss, ctx.generator, ctx.mine, ctx.device
        B = tc.batch_size
        flip = torch.rand(B, generator=g) < 0.5
        noise = torch.randn((B, *self.model_config.latent_shape), generator=g)
        idx = ctx.indices[mine]
        x = to_model_range(self.data.images[idx])
        if self.cfg.data.hflip:
            x = torch.where(flip[mine].view(-1, 1, 1, 1), x.flip(3), x)
        x = x.to(dev)
        disc_on = lc.disc_start is not None and ctx.step > lc.disc_start
        raw = ctx.accelerator.unwrap_model(self.model)
        with ctx.autocast():
            x_rec, posterior = self.model(x, noise[mine].to(dev))
            l1 = (x - x_rec).abs().flatten(1).sum(1)
            rec = l1.mean()
            if self.feature_distance is not None:
                rec = rec + lc.perceptual_weight * x[0].numel() * self.feature_distance(x, x_rec).mean()
            kl = posterior.kl().mean()
            loss = rec + lc.kl_weight * kl
            out = {"rec_l1": l1.detach().mean() / x[0].numel(), "kl": kl.detach()}
            if disc_on:
                disc = self.extra["disc"][0]
                g_loss = -disc(x_rec).mean()
                d_weight = lc.disc_weight * adaptive_weight(rec, g_loss, raw.last_layer)
                loss = loss + d_weight * g_loss
                out.update(g_loss=g_loss.detach(), d_weight=d_weight)
        ctx.backward(loss)
        ctx.apply(self.optimizer, self.model.parameters(), loss, tc.grad_clip)
        if disc_on:
            disc, disc_opt = self.extra["disc"]
            with ctx.autocast():
                d_loss = hinge_d_loss(disc(x), disc(x_rec.detach()))
            ctx.backward(d_loss)
            ctx.apply(disc_opt, disc.parameters(), d_loss, 0.0)
            out["d_loss"] = d_loss.detach()
        return {"loss": loss.detach(), **out}

    def _ema_model(self, ema_weights: dict[str, Tensor]) -> AutoencoderKL:
        model = AutoencoderKL(self.model_config)
        model.load_state_dict(ema_weights)
        return model.eval()

    def state_dict(self, ema_weights: dict[str, Tensor]) -> dict[str, Any]:
        """The latent statistics of the EMA weights on the training images: the codec's scale factor."""
        with torch.random.fork_rng(devices=[]):  # building the network draws initial weights: leave no trace
            model = self._ema_model(ema_weights)
        return {"latent": latent_statistics(model, self.data.images[:SCALE_IMAGES])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (the latent statistics are recomputed at each checkpoint)."""

    @torch.no_grad()
    def preview(self, ema_weights: dict[str, Tensor], path: Path) -> Path:
        """Rows of images and, under each row, their reconstructions by the EMA weights (posterior means)."""
        with torch.random.fork_rng(devices=[]):
            model = self._ema_model(ema_weights)
        n = min(self.cfg.preview_n, len(self.data))
        per_row = max(1, int(math.ceil(math.sqrt(2 * n))))
        n = max(1, n // per_row) * per_row if n >= per_row else n  # whole rows
        images = self.data.images[:n]
        rec = from_model_range(model.decode(model.encode(to_model_range(images)).mean))
        rows = [torch.cat([images[i : i + per_row], rec[i : i + per_row]]) for i in range(0, n, per_row)]
        return save_grid(torch.cat(rows), path, nrow=min(per_row, n))


__all__ = ["AutoencoderTask", "adaptive_weight", "fill_autoencoder_config", "hinge_d_loss", "latent_statistics"]
