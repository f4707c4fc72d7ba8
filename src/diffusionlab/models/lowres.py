"""A network conditioned on a low-resolution image by concatenation (SR3, Saharia et al. 2021; cascaded diffusion,
Ho et al. 2022, section 3): the condition is brought to the network's grid and stacked with x_t on the channels.

The condition y is (B, C + 1, h, w): the (augmented) low-resolution image and one constant channel holding its
augmentation level s, so the network knows how noisy its condition is (CDM's conditioning on the augmentation level;
`superres.condition` builds it). How it reaches the grid (H, W) of x_t:

- k = ceil(h / H) (the same k across the width): y is resized bicubically to (k H, k W), then k x k blocks are
  folded into channels (pixel unshuffle), giving (C + 1) k^2 channels on the grid (H, W).
- In pixel space h < H, so k = 1: SR3's bicubic upsampling of the low-resolution image.
- In an autoencoder's latent space the grid can be coarser than the condition (a 14x14 image for 8x8 latents);
  folding keeps every low-resolution pixel instead of averaging them away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import validation as v
from ..errors import ConfigError


@dataclass
class LowResConfig:
    """The low-resolution condition of a super-resolution network: its image channels and its size."""

    RANGES: ClassVar[dict[str, v.Range]] = {"image_size": v.at_least(1, v.MAX_IMAGE_SIDE), "channels": v.at_least(1)}

    image_size: int | tuple[int, int]  # h (= w) or (h, w)
    channels: int = 1

    @property
    def height_width(self) -> tuple[int, int]:
        """(h, w) of the low-resolution images."""
        s = self.image_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @staticmethod
    def from_dict(d: Any, section: str = "model.lowres") -> "LowResConfig":
        """Parse and check a `model.lowres` section (one-line ConfigErrors)."""
        if "image_size" not in (d if isinstance(d, dict) else {}):
            raise ConfigError(f"config section '{section}' needs image_size (the low-resolution size)")
        values = v.check_fields(LowResConfig, d, section, LowResConfig.RANGES)
        if isinstance(values["image_size"], list):
            values["image_size"] = tuple(values["image_size"])
        return LowResConfig(**values)


def fold_factor(low: tuple[int, int], grid: tuple[int, int]) -> int:
    """k = ceil(h / H), the same for both sides: the condition is resized to k times the grid, then folded."""
    return max(math.ceil(low[0] / grid[0]), math.ceil(low[1] / grid[1]), 1)


class LowResConditioned(nn.Module):
    """`net(x_t, t, y)` = inner(concat[x_t, fold(resize(y))], t): a super-resolution network around any backbone."""

    def __init__(self, build: Callable[[dict[str, Any]], nn.Module], cfg: dict[str, Any], lowres: LowResConfig):
        super().__init__()
        size = cfg.get("image_size")
        if size is None:
            raise ConfigError("a super-resolution network needs model.image_size")
        self.grid = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.lowres = lowres
        self.k = fold_factor(lowres.height_width, self.grid)
        self.cond_channels = (lowres.channels + 1) * self.k**2  # + 1: the augmentation level's channel
        x_channels = int(cfg.get("in_channels", 1))
        out = cfg.get("out_channels") or x_channels  # the family's output, not the widened input
        self.net = build({**cfg, "in_channels": x_channels + self.cond_channels, "out_channels": out})

    def fold(self, y: Tensor) -> Tensor:
        """The condition (B, C + 1, h, w) on the network's grid: (B, (C + 1) k^2, H, W)."""
        c, (h, w) = self.lowres.channels + 1, self.lowres.height_width
        if y.ndim != 4 or tuple(y.shape[1:]) != (c, h, w):
            raise ConfigError(f"the low-resolution condition must be {c}x{h}x{w} (image channels + the augmentation "
                              f"level), got {'x'.join(map(str, y.shape[1:]))}")
        size = (self.k * self.grid[0], self.k * self.grid[1])
        if (h, w) != size:  # bicubic, as SR3 upsamples its input; the level channel is constant and stays so
            y = F.interpolate(y, size=size, mode="bicubic", align_corners=False)
        return F.pixel_unshuffle(y, self.k) if self.k > 1 else y

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The inner network on [x_t, the folded condition]; a super-resolution network has no unconditional mode."""
        if y is None:
            raise ConfigError("this is a super-resolution model: it needs low-resolution images "
                              "(diffusionlab upsample RUN --images FILE, or sample BASE --then RUN)")
        return self.net(torch.cat([x, self.fold(y.to(x.dtype))], dim=1), t)


__all__ = ["LowResConditioned", "LowResConfig", "fold_factor"]
