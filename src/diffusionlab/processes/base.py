"""What every model family declares: the `Process` protocol and the `Setting`s of its config section.

One class per family (processes/ddpm.py, flow.py, vpsde.py, vesde.py, ncsn.py) implements this protocol, and
`processes/registry.py` lists them in one table, `METHODS`. Everything outside the family asks the process
instead of testing which family it is:

- its **path** x_t = alpha(t) x0 + sigma(t) eps and what the network output means (`prediction`);
- its **network time convention**: the network is told `time_scale * t` (DDPM's integer steps as they are;
  continuous t in [0, 1] scaled to DDPM's 0..1000, so the sinusoidal embedding separates nearby times);
- its **output channels** (a learned reverse variance doubles them);
- its **discrete steps** `T` (None in continuous time), which bound the DDPM/DDIM step count;
- its **sampling defaults** (`default_sampler`, `default_steps(sampler)`) and the VP grid the DDPM/DDIM samplers
  walk (`vp_schedule`);
- its **training law**: `draw` (t and eps), `loss`, and an optional importance sampler of t;
- its **config fields** (`settings`): names, defaults, types and help, from which the config checks and the CLI
  flags are built.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import torch
from torch import Tensor

from ..errors import ConfigError
from ..validation import show

if TYPE_CHECKING:
    from ..denoiser import Denoiser, Network
    from ..paths import GaussianPath
    from ..prediction import PredictionType
    from ..schedules import NoiseSchedule
    from .timesteps import LossSecondMomentSampler


@dataclass(frozen=True)
class Setting:
    """One field of a family's config section: config key, default, parser, help, and the CLI flag it gets."""

    name: str
    default: Any
    parse: Callable[[str], Any]  # float, int or str: turns a command-line string into the value
    help: str
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # default: --name with dashes
    maximum: float | None = None  # the largest value that makes sense (a count that sizes tensors, e.g. T)

    @property
    def cli_flag(self) -> str:
        """The command-line flag, e.g. --sigma-min."""
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any, method: str) -> Any:
        """The value if it has this setting's type (and is finite, or one of the choices); else a one-line ConfigError."""
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"{method} {self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if self.parse is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{method} {self.name} must be a whole number, got {show(value)}")
        elif self.parse is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= sys.float_info.max:
                raise ConfigError(f"{method} {self.name} must be a finite number, got {show(value)}")
            value = float(value)
        elif self.parse is str and not isinstance(value, str):
            raise ConfigError(f"{method} {self.name} must be a string, got {show(value)}")
        # Checked before the process is built: a T of 10^9 would allocate its schedule (gigabytes) first.
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{method} {self.name} must be at most {self.maximum:g}, got {value}")
        return value



class Process(Protocol):
    """A Gaussian model family: its path, time convention, training loss and sampling defaults (module docstring)."""

    method: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]]
    time_scale: ClassVar[float]
    default_sampler: ClassVar[str]
    path: GaussianPath
    prediction: PredictionType
    learned_variance: bool
    variance: str  # the reverse variance the ancestral (ddpm) sampler uses by default: beta, beta_tilde or learned
    pixel_decoder: bool  # whether the training loss ends in L_0 over the 256 pixel bins (needs pixel-space data)

    @property
    def T(self) -> int | None:
        """Number of discrete steps (DDPM), or None in continuous time."""
        ...

    def out_channels(self, channels: int) -> int:
        """Network output channels for data with `channels` channels."""
        ...

    def config(self) -> dict[str, Any]:
        """Its settings as constructor keyword arguments (the process section of config.json, without the method)."""
        ...

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training noise for a batch of data of `shape`: times t and eps ~ N(0, I)."""
        ...

    def loss(self, net: Network, x0: Tensor, t: Tensor, eps: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-example training loss."""
        ...

    def denoiser(self, net: Network) -> Denoiser:
        """The sampler-facing model of a network trained by this process."""
        ...

    def default_steps(self, sampler: str) -> int:
        """Sampling steps when the user gives none."""
        ...

    def vp_schedule(self, steps: int, spacing: str = "uniform") -> NoiseSchedule:
        """The K-step variance-preserving grid the DDPM and DDIM samplers walk (and RePaint, SDEdit, the bound)."""
        ...

    def timestep_sampler(self) -> LossSecondMomentSampler | None:
        """An importance sampler of t that learns from the losses (iDDPM section 3.3), or None: `draw`'s law."""
        ...


__all__ = ["Process", "Setting"]
