"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, section 3 and appendix G; docs/maths.md 7).

E: x in R^{C x H x W} -> q(z | x) = N(mu(x), diag sigma(x)^2) over z in R^{c x h x w}, with f = H / h = 2^m, and
D: z -> x. The encoder and decoder are the ResNet stacks of LDM's first stage (their appendix G: ResNet blocks of
GroupNorm, SiLU and 3x3 convs; stride-2 convs down, nearest-neighbour up; one self-attention block in the middle,
at the latent resolution). An image whose size is not a multiple of f is padded (edge pixels replicated) to
`pad_to` before encoding and cropped back after decoding: 28x28 MNIST is encoded at 32x32.

`PatchDiscriminator` is pix2pix's PatchGAN (Isola et al. 2017), the discriminator LDM switches on after N steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import validation as v
from ..errors import ConfigError
from .config import SizedConfig, resnet_parameters
from .layers import AttentionBlock, Downsample, ResBlock, Upsample, group_norm
from .unet import preferred_memory_format


@dataclass
class AutoencoderConfig(SizedConfig):
    """Hyper-parameters of `AutoencoderKL`; validated on construction (one-line ConfigErrors)."""

    label: ClassVar[str] = "autoencoder config"
    RANGES: ClassVar[dict[str, v.Range]] = {
        "image_size": v.at_least(1, v.MAX_IMAGE_SIDE), "in_channels": v.at_least(1), "base_channels": v.at_least(1),
        "channel_mult": v.at_least(1), "num_res_blocks": v.at_least(1), "latent_channels": v.at_least(1),
        "pad_to": v.at_least(1, v.MAX_IMAGE_SIDE), "groups": v.at_least(1), "dropout": v.UNIT}

    image_size: int | tuple[int, int]  # H (= W) or (H, W) of the data
    in_channels: int = 1
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level: f = 2 ** (len - 1)
    num_res_blocks: int = 1
    latent_channels: int = 4  # c
    attention: bool = True  # self-attention in the middle blocks of encoder and decoder (LDM's first stage)
    pad_to: int | None = None  # encode at this square size (>= H, W; a multiple of f); None: H, W themselves
    groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        try:
            if isinstance(self.image_size, (list, tuple)):
                self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
            self.channel_mult = tuple(int(m) for m in self.channel_mult)
            self._validate()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid autoencoder config value: {e}".splitlines()[0]) from None

    @staticmethod
    def min_parameters(values: dict[str, Any]) -> int:
        """The encoder's and decoder's ResNet blocks alone (num_res_blocks per level down, one more up)."""
        return resnet_parameters(values["base_channels"], values["channel_mult"], 2 * values["num_res_blocks"] + 1)

    @property
    def factor(self) -> int:
        """The downsampling factor f = 2^m."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(H', W') the encoder sees."""
        return (self.pad_to, self.pad_to) if self.pad_to is not None else self.height_width

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the data."""
        return (self.in_channels, *self.height_width)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) = (latent_channels, H' / f, W' / f)."""
        h, w = self.padded_size
        return (self.latent_channels, h // self.factor, w // self.factor)

    def _validate(self) -> None:
        h, w = self.height_width
        if h < 1 or w < 1:
            raise ConfigError(f"image_size must be positive, got {self.image_size}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(f"channel_mult must be a non-empty list of positive ints, got {list(self.channel_mult)}")
        for name in ("in_channels", "base_channels", "num_res_blocks", "latent_channels", "groups"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        f = self.factor
        if self.pad_to is not None:
            if self.pad_to < max(h, w) or self.pad_to % f:
                raise ConfigError(f"pad_to must be >= the image size {h}x{w} and a multiple of f = {f}, got {self.pad_to}")
        elif h % f or w % f:
            raise ConfigError(f"image size {h}x{w} is not a multiple of f = {f}: set pad_to (e.g. "
                              f"{-(-max(h, w) // f) * f}) or use fewer levels")

class DiagonalGaussian:
    """q(z | x) = N(mean, diag exp(logvar)), log-variance clamped to [-30, 20] as in LDM."""

    def __init__(self, moments: Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> Tensor:
        """exp(logvar / 2)."""
        return torch.exp(0.5 * self.logvar)

    def sample(self, noise: Tensor | None) -> Tensor:
        """z = mean + std * noise (the reparameterization trick, Kingma & Welling 2014); the mean when noise is None."""
        return self.mean if noise is None else self.mean + self.std * noise

    def kl(self) -> Tensor:
        """KL(q(z | x) || N(0, I)) per example, summed over the latent dimensions (nats)."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class _Encoder(nn.Module):
    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        ch = c.base_channels
        self.conv_in = nn.Conv2d(c.in_channels, ch, 3, padding=1)
        blocks: list[nn.Module] = []
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(ch, c.base_channels * mult, None, c.dropout, c.groups))
                ch = c.base_channels * mult
            if level != len(c.channel_mult) - 1:
                blocks.append(Downsample(ch))
        self.down = nn.Sequential(*blocks)
        self.mid = _Middle(ch, c)
        self.norm_out = group_norm(ch, c.groups)
        self.conv_out = nn.Conv2d(ch, 2 * c.latent_channels, 3, padding=1)
        self.moments = nn.Conv2d(2 * c.latent_channels, 2 * c.latent_channels, 1)  # LDM's quant_conv

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.moments(self.conv_out(F.silu(self.norm_out(h))))


class _Decoder(nn.Module):
    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        ch = c.base_channels * c.channel_mult[-1]
        self.latent_in = nn.Conv2d(c.latent_channels, c.latent_channels, 1)  # LDM's post_quant_conv
        self.conv_in = nn.Conv2d(c.latent_channels, ch, 3, padding=1)
        self.mid = _Middle(ch, c)
        blocks: list[nn.Module] = []
        for level in reversed(range(len(c.channel_mult))):
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResBlock(ch, c.base_channels * c.channel_mult[level], None, c.dropout, c.groups))
                ch = c.base_channels * c.channel_mult[level]
            if level != 0:
                blocks.append(Upsample(ch))
        self.up = nn.Sequential(*blocks)
        self.norm_out = group_norm(ch, c.groups)
        self.conv_out = nn.Conv2d(ch, c.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(self.latent_in(z))))
        return self.conv_out(F.silu(self.norm_out(h)))


class _Middle(nn.Module):
    """ResBlock, self-attention (optional), ResBlock: the middle of LDM's encoder and decoder."""

    def __init__(self, ch: int, c: AutoencoderConfig) -> None:
        super().__init__()
        self.res1 = ResBlock(ch, ch, None, c.dropout, c.groups)
        self.attn = AttentionBlock(ch, 1, c.groups) if c.attention else nn.Identity()
        self.res2 = ResBlock(ch, ch, None, c.dropout, c.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.res2(self.attn(self.res1(x)))


class AutoencoderKL(nn.Module):
    """LDM's KL autoencoder: `encode(x) -> q(z | x)`, `decode(z) -> x`; x in [-1, 1], padded and cropped here."""

    def __init__(self, config: AutoencoderConfig, memory_format: torch.memory_format | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)
        # A speed choice only, as for the UNet (unet.preferred_memory_format): on an AVX-512 CPU channels_last made
        # encoding MNIST 1.4x faster at batch 512 (1.9x at batch 64); the numbers agree to float rounding. Unlike the
        # UNet's, this was not measured per CPU vendor, so every AVX-512 CPU keeps channels_last here.
        self.memory_format = memory_format or preferred_memory_format(on_amd_avx512=torch.channels_last)
        self.to(memory_format=self.memory_format)

    def _pad(self, x: Tensor) -> Tensor:
        (h, w), (ph, pw) = self.config.height_width, self.config.padded_size
        if x.shape[1:] != self.config.image_shape:
            raise ConfigError(f"the autoencoder takes images of {self.config.image_shape}, got {tuple(x.shape[1:])}")
        if (ph, pw) == (h, w):
            return x
        top, left = (ph - h) // 2, (pw - w) // 2
        return F.pad(x, (left, pw - w - left, top, ph - h - top), mode="replicate")

    def _crop(self, x: Tensor) -> Tensor:
        (h, w), (ph, pw) = self.config.height_width, self.config.padded_size
        top, left = (ph - h) // 2, (pw - w) // 2
        return x[:, :, top : top + h, left : left + w]

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z | x) for images x (B, C, H, W) in [-1, 1]."""
        return DiagonalGaussian(self.encoder(self._pad(x).contiguous(memory_format=self.memory_format)).contiguous())

    def decode(self, z: Tensor) -> Tensor:
        """The reconstruction D(z), (B, C, H, W), not clamped."""
        return self._crop(self.decoder(z.contiguous(memory_format=self.memory_format))).contiguous()

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """(D(z), q(z | x)) with z = mean + std * noise (the mean when noise is None)."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(noise)), posterior

    @property
    def last_layer(self) -> Tensor:
        """The decoder's output weights (LDM's adaptive discriminator weight compares gradients there)."""
        return self.decoder.conv_out.weight


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): logits for overlapping patches, as LDM's first stage uses after `disc_start`.

    conv4x4/2 - LeakyReLU, then n_layers - 1 conv4x4/2 - BatchNorm - LeakyReLU, conv4x4/1 - BatchNorm - LeakyReLU,
    conv4x4/1 to one channel; weights from N(0, 0.02) and BatchNorm scales from N(1, 0.02) (DCGAN's init).
    """

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = base_channels
        for n in range(1, n_layers + 1):
            out = base_channels * min(2**n, 8)
            layers += [nn.Conv2d(ch, out, 4, 2 if n < n_layers else 1, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Patch logits (B, 1, h', w')."""
        return self.net(x)


__all__ = ["AutoencoderConfig", "AutoencoderKL", "DiagonalGaussian", "PatchDiscriminator"]
