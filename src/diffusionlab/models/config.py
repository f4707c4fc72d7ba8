"""What every network config shares: `image_size` as H or (H, W), and a JSON round trip with one-line errors."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from ..errors import ConfigError

C = TypeVar("C", bound="SizedConfig")


class SizedConfig:
    """A mixin for the network config dataclasses (UNetConfig, AutoencoderConfig); `label` names it in errors."""

    label: ClassVar[str]
    image_size: int | tuple[int, int]

    @property
    def height_width(self) -> tuple[int, int]:
        """(H, W) of the input images."""
        return self.image_size if isinstance(self.image_size, tuple) else (self.image_size, self.image_size)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Inverse of `to_dict`; unknown keys and a missing image_size raise ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.label} keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if "image_size" not in d:
            raise ConfigError(f"{cls.label} needs image_size")
        return cls(**d)


__all__ = ["SizedConfig"]
