"""Codecs: the space a diffusion model lives in. `encode(x) -> z` before training, `decode(z) -> x` after sampling.

A run owns one codec (its config's `codec` section). The trainer encodes each batch of pixels in [-1, 1]; sampling
and evaluation decode what the model generates. The identity `PixelCodec` is the default, so a pixel-space model
is a latent model whose codec does nothing. A latent kind (Rombach et al. 2022: an autoencoder's latents, docs/maths.md
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

from ..data.dataset import PIXEL_RANGE, to_model_range
from ..errors import ConfigError
from ..validation import show


class Codec(Protocol):
    """The map between data space (pixels in [-1, 1]) and the space the diffusion model is trained in."""

    kind: ClassVar[str]
    x0_clip: tuple[float, float] | None
    stochastic: bool
    pixel_space: bool  # whether z is the pixels themselves (pixel likelihoods and pixel editing apply)

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

    def encode_dataset(self, images: Tensor, hflip: bool) -> "EncodedData":
        """The training set (uint8 (N, C, H, W)) prepared for `EncodedData.batch` (a latent codec encodes it once)."""
        ...

    def files(self) -> dict[str, bytes]:
        """Files (path inside the run directory -> bytes) a new run keeps with it, e.g. a latent codec's weights."""
        ...

    def to(self, device: torch.device | str) -> "Codec":
        """The codec with its tensors on `device`."""
        ...

    def config(self) -> dict[str, Any]:
        """The run's `codec` section."""
        ...


class EncodedData(Protocol):
    """A training set in the codec's space."""

    def batch(self, idx: Tensor, flip: Tensor | None, noise: Tensor | None) -> Tensor:
        """x0 for the images idx, mirrored where `flip` (None: no flips), drawn with `noise` if the codec is stochastic."""
        ...


class PixelData:
    """uint8 images, scaled to [-1, 1] batch by batch."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def batch(self, idx: Tensor, flip: Tensor | None, noise: Tensor | None = None) -> Tensor:
        """to_model_range(images[idx]), mirrored where flip."""
        x = to_model_range(self.images[idx])
        return x if flip is None else torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


class PixelCodec:
    """The identity: the model works on pixels in [-1, 1], and its x0 prediction may be clipped to that range."""

    kind: ClassVar[str] = "pixel"
    x0_clip = PIXEL_RANGE
    stochastic = False
    pixel_space = True

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

    def encode_dataset(self, images: Tensor, hflip: bool) -> PixelData:
        """The images themselves, scaled batch by batch."""
        return PixelData(images)

    def files(self) -> dict[str, bytes]:
        """None."""
        return {}

    def to(self, device: torch.device | str) -> "PixelCodec":
        """Nothing to move."""
        return self

    def config(self) -> dict[str, Any]:
        """{"kind": "pixel"}."""
        return {"kind": self.kind}


def _autoencoder(section: dict[str, Any], run_dir: Path | None) -> Codec:
    from .autoencoder import build_autoencoder_codec  # the autoencoder's weights load only when a run needs them

    return build_autoencoder_codec(section, run_dir)


# kind -> builder(codec section, run directory) -> Codec. The run directory is where a latent codec keeps its weights.
CODECS: dict[str, Callable[[dict[str, Any], Path | None], Codec]] = {
    "pixel": lambda section, run_dir: PixelCodec(),
    "autoencoder": _autoencoder,
}


def check_section(section: dict[str, Any]) -> None:
    """One-line errors for a `codec` section that cannot describe a codec (without loading any weights)."""
    kind = section.get("kind", "pixel")
    if not isinstance(kind, str) or kind not in CODECS:
        raise ConfigError(f"unknown codec {show(kind)}; choose from {', '.join(CODECS)}")
    if kind == "pixel" and set(section) - {"kind"}:
        raise ConfigError(f"the pixel codec has no settings, got {sorted(map(str, set(section) - {'kind'}))}")
    if kind == "autoencoder":
        from .autoencoder import SECTION_KEYS

        if set(section) == {"kind"}:
            raise ConfigError("this config trains in an autoencoder's latent space: give --latent AE_RUN "
                              "(an autoencoder run from `diffusionlab train-autoencoder`)")
        if set(section) != SECTION_KEYS:
            raise ConfigError(f"the autoencoder codec section needs exactly {sorted(SECTION_KEYS)}, got "
                              f"{sorted(map(str, section))}")
        from ..models.autoencoder import AutoencoderConfig
        from ..validation import above, check_value

        for key in ("source", "checkpoint", "sha256"):
            check_value(section[key], str, f"codec.{key}")
        check_value(section["scale_factor"], float, "codec.scale_factor", above(0))
        if not isinstance(section["model"], dict):
            raise ConfigError("codec.model must be a JSON object (the autoencoder's config)")
        AutoencoderConfig.check_dict(section["model"], "codec.model")


def build_codec(section: dict[str, Any] | None, run_dir: Path | None = None) -> Codec:
    """The codec a run's `codec` section describes (the pixel codec when there is none)."""
    section = dict(section or {"kind": "pixel"})
    check_section(section)
    return CODECS[section.get("kind", "pixel")](section, run_dir)


__all__ = ["CODECS", "check_section", "Codec", "EncodedData", "PixelCodec", "PixelData", "build_codec"]
