"""Networks (SPEC.md section 8) and the one table that builds them from a config's `model` section."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from .unet import UNet, UNetConfig

# name -> builder(model section without "network") -> module called as net(x, t, y=None). A run's `model` section
# names its network ("network": "unet"; sections written before the key existed are UNets).
NETWORKS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "unet": lambda cfg: UNet(UNetConfig.from_dict(cfg)),
}


def build_network(model_cfg: dict[str, Any]) -> nn.Module:
    """The network a config's `model` section describes (one-line ConfigError for an unknown name or field)."""
    cfg = dict(model_cfg)
    name = cfg.pop("network", "unet")
    if name not in NETWORKS:
        raise ConfigError(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}")
    return NETWORKS[name](cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of `model` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["NETWORKS", "UNet", "UNetConfig", "build_network", "count_parameters"]
