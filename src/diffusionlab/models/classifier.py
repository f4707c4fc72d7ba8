"""The noise-aware classifier f_phi(y | x_t, t) of classifier guidance (Dhariwal & Nichol 2021, section 4).

It is the UNet's encoder half -- the same pre-activated ResNet blocks with the time embedding added in
every block, and the same downsampling -- followed by GroupNorm, SiLU, global average pooling and a
linear head. (Dhariwal & Nichol pool with attention; average pooling is enough at 28x28.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .. import validation as v
from ..errors import ConfigError
from .config import resnet_parameters
from .layers import Downsample, ResBlock, group_norm, timestep_embedding


@dataclass
class ClassifierConfig:
    """Hyper-parameters of `NoisyClassifier`."""

    image_size: int
    in_channels: int = 1
    num_classes: int = 10
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Types and ranges first (a classifier.json or the command line may hold anything), then the weights' memory.
        v.check_instance(self, "classifier", {
            "image_size": v.at_least(1, v.MAX_IMAGE_SIDE), "in_channels": v.at_least(1), "num_classes": v.at_least(1),
            "base_channels": v.at_least(1), "channel_mult": v.at_least(1), "num_res_blocks": v.at_least(1),
            "groups": v.at_least(1), "dropout": v.UNIT})
        if self.num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {self.num_classes}")
        if not self.channel_mult:
            raise ConfigError("classifier channel_mult must not be empty")
        params = resnet_parameters(self.base_channels, self.channel_mult, self.num_res_blocks)
        v.require_memory(4 * params, "the classifier", f"its weights (>= {params:,} parameters)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (inverse of `from_dict`)."""
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierConfig":
        """Build from a dict, rejecting unknown keys with a one-line error."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown classifier config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


class NoisyClassifier(nn.Module):
    """`classifier(x_t, t) -> logits (B, num_classes)` for noisy images x_t at network time t."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        base, emb_dim = c.base_channels, 4 * c.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_conv = nn.Conv2d(c.in_channels, base, 3, padding=1)
        self.blocks = nn.ModuleList()
        ch = base
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                self.blocks.append(ResBlock(ch, base * mult, emb_dim, c.dropout, c.groups))
                ch = base * mult
            if level != len(c.channel_mult) - 1:
                self.blocks.append(Downsample(ch))
        self.out_norm = group_norm(ch, c.groups)
        self.head = nn.Linear(ch, c.num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, C, H, W) noisy images; t: (B,) network time -> class logits (B, num_classes)."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ConfigError(f"classifier expects input (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        w = self.input_conv.weight
        emb = F.silu(self.time_mlp(timestep_embedding(t.to(w.device), self.config.base_channels).to(w.dtype)))
        h = self.input_conv(x.to(w.dtype))
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return self.head(F.silu(self.out_norm(h)).mean(dim=(2, 3)))


__all__ = ["ClassifierConfig", "NoisyClassifier"]
