"""Networks (docs/maths.md section 8) and the one table that builds them from a config's `model` section."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from .config import SizedConfig
from .dit import DiT, DiTConfig
from .lowres import LowResConditioned, LowResConfig
from .unet import UNet, UNetConfig

# name -> builder(model section without "network") -> module called as net(x, t, y=None). A run's `model` section
# names its network ("network": "unet"; sections written before the key existed are UNets).
NETWORKS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "unet": lambda cfg: UNet(UNetConfig.from_dict(cfg)),
    "dit": lambda cfg: DiT(DiTConfig.from_dict(cfg)),  # Peebles & Xie 2023 (models/dit.py)
}


# name -> the config class of that network (its fields, types and ranges; the typed check of a `model` section).
NETWORK_CONFIGS: dict[str, type[SizedConfig]] = {"unet": UNetConfig, "dit": DiTConfig}


def check_section(model_cfg: dict[str, Any]) -> None:
    """One-line ConfigErrors for a `model` section before any network is built: the network's name, unknown keys,
    field types and ranges, and weights that cannot fit in memory (the sizes may still be missing)."""
    from ..validation import show, suggest

    if not isinstance(model_cfg, dict):
        raise ConfigError(f"config section 'model' must be a JSON object, got {show(model_cfg)}")
    cfg = dict(model_cfg)
    name = cfg.pop("network", "unet")
    if not isinstance(name, str) or name not in NETWORK_CONFIGS:
        raise ConfigError(f"unknown network {show(name)}{suggest(str(name), NETWORK_CONFIGS)}; choose from "
                          f"{', '.join(NETWORK_CONFIGS)}")
    lowres = cfg.pop("lowres", None)
    if lowres is not None:
        LowResConfig.from_dict(lowres)
    NETWORK_CONFIGS[name].check_dict(cfg, "model")


def build_network(model_cfg: dict[str, Any]) -> nn.Module:
    """The network a config's `model` section describes (one-line ConfigError for an unknown name or field); with a
    `lowres` subsection, that network conditioned on a low-resolution image by concatenation (models/lowres.py)."""
    cfg = dict(model_cfg)
    name = cfg.pop("network", "unet")
    if not isinstance(name, str) or name not in NETWORKS:
        raise ConfigError(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}")
    lowres = cfg.pop("lowres", None)
    if lowres is not None:
        return LowResConditioned(NETWORKS[name], cfg, LowResConfig.from_dict(lowres))
    return NETWORKS[name](cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of `model` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["NETWORKS", "NETWORK_CONFIGS", "DiT", "DiTConfig", "LowResConditioned", "LowResConfig", "UNet", "UNetConfig", "build_network", "check_section", "count_parameters"]
