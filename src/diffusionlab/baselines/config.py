"""The run config of a baseline (GAN, VAE, normalizing flow): config.json says `"kind": "gan"` (or "vae", "nf").

The layout is the diffusion run's where it can be: `data` and `train` are the same sections; `model` is the kind's
network (models/gan.py, vae.py, glow.py; sizes filled from the data); `loss` holds the kind's objective settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import validation as v
from ..errors import ConfigError
from ..models.config import SizedConfig
from ..models.gan import GANConfig
from ..models.glow import GlowConfig
from ..models.vae import VAEConfig
from ..training.config import DataConfig, OptimConfig, _build, _image_shape, _sections


@dataclass
class GANLoss:
    """The minimax game with the non-saturating generator loss (Goodfellow et al. 2014, section 3)."""

    d_steps: int = 1  # k: discriminator steps per generator step (Algorithm 1)
    r1_gamma: float = 0.0  # gamma of the R1 penalty (gamma / 2) E ||grad_x D(x)||^2 on real data (Mescheder et al. 2018)
    disc_lr: float | None = None  # the discriminator's learning rate (None: train.lr)

    RANGES: ClassVar[dict[str, v.Range]] = {"d_steps": v.at_least(1, 100), "r1_gamma": v.at_least(0), "disc_lr": v.above(0)}


@dataclass
class VAELoss:
    """The negative ELBO (Kingma & Welling 2014, eq. 3), its KL term weighted by beta (beta-VAE; 1 is the ELBO)."""

    kl_weight: float = 1.0  # beta; the reported NLL is always the beta = 1 bound
    kl_warmup_steps: int = 0  # beta rises linearly from 0 over these steps (Bowman et al. 2016); 0: off

    RANGES: ClassVar[dict[str, v.Range]] = {"kl_weight": v.at_least(0), "kl_warmup_steps": v.at_least(0)}


@dataclass
class FlowLoss:
    """Maximum likelihood of uniformly dequantized data (Theis et al. 2016): no settings."""

    RANGES: ClassVar[dict[str, v.Range]] = {}


# kind -> (its network's config class, its objective's settings)
SECTIONS: dict[str, tuple[type[SizedConfig], type]] = {"gan": (GANConfig, GANLoss), "vae": (VAEConfig, VAELoss),
                                                       "nf": (GlowConfig, FlowLoss)}


@dataclass
class BaselineRunConfig:
    """Everything that defines a baseline run."""

    kind: str
    preset: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # the kind's network config; sizes from the data
    loss: dict[str, Any] = field(default_factory=dict)  # the kind's objective settings (SECTIONS)
    train: OptimConfig = field(default_factory=OptimConfig)
    preview_n: int = 64  # images in each training-time grid

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def objective(self) -> Any:
        """The `loss` section as the kind's dataclass (defaults filled in)."""
        return SECTIONS[self.kind][1](**self.loss)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "BaselineRunConfig":
        """Parse and validate (unknown keys are an error)."""
        sections = {"data": DataConfig, "train": OptimConfig}
        _sections(d, [*sections, "kind", "preset", "model", "loss", "preview_n"], ("model", "loss"))
        kind = d.get("kind")
        if kind not in SECTIONS:
            raise ConfigError(f"kind must be one of {', '.join(SECTIONS)} for a baseline run, got {v.show(kind)}")
        cfg = BaselineRunConfig(kind=kind, preset=d.get("preset"), model=dict(d.get("model") or {}),
                                loss=dict(d.get("loss") or {}), preview_n=d.get("preview_n", 64),
                                **{name: _build(cls, d.get(name) or {}, name) for name, cls in sections.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """One-line ConfigErrors for every field (types, ranges, the kind's sections) and for what cannot fit."""
        v.check_value(self.preset, str | None, "preset")
        self.data.validate()
        self.train.validate()
        model_cls, loss_cls = SECTIONS[self.kind]
        self.loss = v.check_fields(loss_cls, self.loss, "loss", loss_cls.RANGES)
        model_cls.check_dict(self.model, "model")
        v.check_value(self.preview_n, int, "preview_n", v.at_least(1, 4096))
        if self.train.text_conditional:
            raise ConfigError(f"a {self.kind} baseline is not text-conditional here; use --class-conditional, or a "
                              "diffusion model for captions")
        shape = _image_shape(self.data, self.model)
        v.require_memory(v.images_bytes(self.train.batch_size, shape), f"train.batch_size {self.train.batch_size}",
                         "one batch of images")
        v.require_memory(v.images_bytes(self.preview_n, shape), f"preview_n {self.preview_n}", "the preview grid")


__all__ = ["SECTIONS", "BaselineRunConfig", "FlowLoss", "GANLoss", "VAELoss"]
