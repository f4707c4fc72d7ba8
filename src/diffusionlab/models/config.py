"""What every network config shares: `image_size` as H or (H, W), a JSON round trip with one-line errors, and the
typed check of a `model` section (before the data fills in its sizes) with a lower bound of the network's size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .. import validation as v
from ..errors import ConfigError

C = TypeVar("C", bound="SizedConfig")


class SizedConfig:
    """A mixin for the network config dataclasses (UNetConfig, AutoencoderConfig); `label` names it in errors,
    `RANGES` gives the allowed numbers of its fields."""

    label: ClassVar[str]
    RANGES: ClassVar[dict[str, v.Range]] = {}
    image_size: int | tuple[int, int]

    @property
    def height_width(self) -> tuple[int, int]:
        """(H, W) of the input images."""
        return self.image_size if isinstance(self.image_size, tuple) else (self.image_size, self.image_size)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return {f.name: (list(x) if isinstance(x := getattr(self, f.name), tuple) else x)
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def check_dict(cls, d: dict[str, Any], section: str | None = None) -> dict[str, Any]:
        """The fields of `d` type- and range-checked (image_size may be missing: the data sets it), and the network's
        weights checked to fit in memory; one-line ConfigErrors named `section.field`."""
        values = v.check_fields(cls, d, section, cls.RANGES)
        if values.get("channel_mult") == ():
            raise ConfigError(f"{section + '.' if section else ''}channel_mult must list at least one level, got []")
        defaults = {f.name: f.default for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                    if f.default is not dataclasses.MISSING}
        params = cls.min_parameters({**defaults, **values})
        v.require_memory(4 * params, f"the network of config section '{section}'" if section else f"the {cls.label}",
                         f"its weights (>= {params:,} parameters)")
        return values

    @staticmethod
    def min_parameters(values: dict[str, Any]) -> int:
        """A lower bound of the network's parameter count (0 when unknown)."""
        return 0

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Inverse of `to_dict`; unknown keys, values of the wrong type and a missing image_size raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"a {cls.label} must be a JSON object, got {v.show(d)}")
        try:
            cls.check_dict(d)
        except ConfigError as e:
            raise (e if str(e).startswith("unknown key") else ConfigError(f"invalid {cls.label} value: {e}")) from None
        if "image_size" not in d:
            raise ConfigError(f"{cls.label} needs image_size")
        return cls(**d)


def resnet_parameters(base_channels: int, channel_mult: tuple[int, ...], blocks_per_level: int) -> int:
    """A lower bound of the weights of a ResNet stack: two 3x3 convolutions of C_i -> C_i per block, `blocks_per_level`
    blocks at each level i of C_i = base_channels * mult_i channels."""
    return 18 * base_channels**2 * sum(m * m for m in channel_mult) * blocks_per_level


def check_levels(hw: tuple[int, int], levels: int, what: str) -> None:
    """One-line ConfigError unless H and W are multiples of 2^levels (each level halves them exactly)."""
    f = 2**levels
    if hw[0] % f or hw[1] % f:
        raise ConfigError(f"image size {hw[0]}x{hw[1]} is not a multiple of 2^{levels} = {f}, as the {what}'s "
                          f"{levels} stride-2 level(s) need: change the levels (model.channel_mult or levels) or the "
                          "size")


@dataclass
class ConvStackConfig(SizedConfig):
    """What the DCGAN-shaped baselines share (the GAN's generator and discriminator, the VAE's encoder and decoder):
    one stride-2 4x4 convolution per level between the image and a feature map at H / 2^L, and a flat latent z."""

    label: ClassVar[str] = "network config"
    RANGES: ClassVar[dict[str, v.Range]] = {
        "image_size": v.at_least(1, v.MAX_IMAGE_SIDE), "in_channels": v.at_least(1), "base_channels": v.at_least(1),
        "channel_mult": v.at_least(1), "latent_dim": v.at_least(1, 65536), "num_classes": v.at_least(1)}

    image_size: int | tuple[int, int]  # H (= W) or (H, W) of the data
    in_channels: int = 1
    base_channels: int = 32  # width at the image's resolution
    channel_mult: tuple[int, ...] = (1, 2)  # widths from the image resolution down: one stride-2 level each
    latent_dim: int = 16  # d of z
    num_classes: int | None = None  # a class-conditional network when set

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        check_levels(self.height_width, len(self.channel_mult), self.label.split()[0])

    @staticmethod
    def min_parameters(values: dict[str, Any]) -> int:
        """The 4x4 convolutions between the levels, twice (down and up)."""
        ch = [values["base_channels"] * m for m in values["channel_mult"]]
        return 2 * 16 * sum(a * b for a, b in zip(ch, ch[1:]))

    @property
    def widths(self) -> list[int]:
        """Feature widths from the image resolution down."""
        return [self.base_channels * m for m in self.channel_mult]

    @property
    def bottom(self) -> tuple[int, int, int]:
        """(C_L, H / 2^L, W / 2^L): the feature map between the convolutions and z."""
        h, w = self.height_width
        f = 2 ** len(self.channel_mult)
        return (self.widths[-1], h // f, w // f)


__all__ = ["ConvStackConfig", "SizedConfig", "check_levels", "resnet_parameters"]
