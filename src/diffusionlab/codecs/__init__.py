"""Codecs: the space a diffusion model lives in. `encode(x) -> z` before training, `decode(z) -> x` after sampling.

A run owns one codec (its config's `codec` section). The trainer encodes each batch of pixels in [-1, 1]; sampling
and evaluation decode what the model generates. The identity `PixelCodec` is the default, so a pixel-space model
is a latent model whose codec does nothing. A latent kind (Rombach et al. 2022: an autoencoder's latents, SPEC.md
section 7) is one more codec class and one line in `CODECS`.

What a codec knows and nobody else does:
- `latent_shape(image_shape)`: the shape of z for an image shape;
- `x0_clip`: the range a sampler may clip the model's x0 prediction to (pixels: [-1, 1]; latents: none);
- `stochastic`: whether `encode` draws from a posterior (then the trainer passes it the noise, drawn from the
  step's generator so that runs stay reproducible and world-size invariant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import Tensor

from ..data.dataset import PIXEL_RANGE
from ..errors import ConfigError


class Codec(Protocol):
    """The map between data space (pixels in [-1, 1]) and the space the diffusion model is trained in."""

    kind: ClassVar[str]
    x0_clip: tuple[float, float] | None
    stochastic: bool

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) of z for images of (C, H, W)."""
        ...

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) of the images whose latents have `latent_shape`."""
        ...

    def encode(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """z for pixels x in [-1, 1]; a stochastic codec draws z = mean + std * noise (the mean when noise is None)."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Pixels (about [-1, 1], not clamped) for z."""
        ...

    def to(self, device: torch.device | str) -> "Codec":
        """The codec with its tensors on `device`."""
        ...

    def config(self) -> dict[str, Any]:
        """The run's `codec` section."""
        ...


class PixelCodec:
    """The identity: the model works on pixels in [-1, 1], and its x0 prediction may be clipped to that range."""

    kind: ClassVar[str] = "pixel"
    x0_clip = PIXEL_RANGE
    stochastic = False

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The image shape itself."""
        return tuple(image_shape)  # type: ignore[return-value]

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The latent shape itself."""
        return tuple(latent_shape)  # type: ignore[return-value]

    def encode(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """x itself."""
        return x

    def decode(self, z: Tensor) -> Tensor:
        """z itself."""
        return z

    def to(self, device: torch.device | str) -> "PixelCodec":
        """Nothing to move."""
        return self

    def config(self) -> dict[str, Any]:
        """{"kind": "pixel"}."""
        return {"kind": self.kind}


# kind -> builder(codec section, run directory) -> Codec. The run directory is where a latent codec keeps its weights.
CODECS: dict[str, Callable[[dict[str, Any], Path | None], Codec]] = {
    "pixel": lambda section, run_dir: PixelCodec(),
}


def build_codec(section: dict[str, Any] | None, run_dir: Path | None = None) -> Codec:
    """The codec a run's `codec` section describes (the pixel codec when there is none)."""
    section = dict(section or {"kind": "pixel"})
    kind = section.get("kind", "pixel")
    if kind not in CODECS:
        raise ConfigError(f"unknown codec {kind!r}; choose from {', '.join(CODECS)}")
    return CODECS[kind](section, run_dir)


__all__ = ["CODECS", "Codec", "PixelCodec", "build_codec"]
