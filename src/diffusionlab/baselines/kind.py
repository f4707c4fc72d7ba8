"""What every baseline family shares: the `BaselineKind` contract (its network, how it samples, what its NLL is)
and `BaselineTask`, the part of training that is the same for all of them (the data, the model section filled from
it, the main network and its Adam optimizer, the preview grid). One module per family fills them in (gan.py, vae.py,
nf.py), the way one class per family fills in `processes.base.Process`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from ..data import from_model_range, load_dataset, to_model_range
from ..errors import ConfigError
from ..training.determinism import derive_seed, generator
from ..training.loop import INIT_KEY, StepContext
from ..training.presets import warn_if_oversized
from ..viz import save_grid
from .config import SECTIONS, BaselineRunConfig

PREVIEW_KEY = 5  # the preview grid's latents: the same at every step, apart from the training streams


class BaselineKind:
    """One baseline family. Subclasses set the class attributes and implement the three static methods."""

    name: ClassVar[str]  # "gan", "vae", "nf": config.json's "kind"
    title: ClassVar[str]  # one line for people, with the paper
    nll: ClassVar[str | None]  # what `evaluate --nll` reports ("ELBO bound", ...); None: the family has no likelihood
    task: ClassVar[type]  # its TrainingTask
    # Whether mixed_precision "auto" may choose bf16 (training/precision.py); else the family trains in float32.
    auto_bf16: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.task.kind = cls  # the task builds its network and draws its preview through its family

    @classmethod
    def network(cls, model: dict[str, Any]) -> nn.Module:
        """The network whose EMA is kept and sampled, from a complete `model` section."""
        raise NotImplementedError

    @staticmethod
    def sample(net: nn.Module, n: int, g: torch.Generator, y: Tensor | None) -> Tensor:
        """n images in [-1, 1] (8-bit values: from_model_range keeps them), every random draw from `g`."""
        raise NotImplementedError

    @staticmethod
    def bits_per_dim(net: nn.Module, images: Tensor, y: Tensor | None, g: torch.Generator) -> Tensor:
        """-log2 p(x) / D per image of uint8 `images` (a bound where the family has only a bound)."""
        raise NotImplementedError


def fill_model_section(cfg: BaselineRunConfig, shape: tuple[int, int, int], num_classes: int | None,
                       dataset: str) -> Any:
    """Complete the `model` section with the data's size and channels and, for a class-conditional run, its number
    of classes; one-line errors for what does not fit. Returns the section as the kind's config class (defaults
    filled in)."""
    channels, h, w = shape
    m = cfg.model
    m["image_size"] = h if h == w else [h, w]
    m["in_channels"] = channels
    if cfg.train.class_conditional:
        if not num_classes:
            raise ConfigError(f"class_conditional training needs labels, and dataset {dataset} has none")
        m["num_classes"] = num_classes
    else:
        m["num_classes"] = None
    return SECTIONS[cfg.kind][0].from_dict(m)


class BaselineTask:
    """The shared half of a baseline's TrainingTask; a family's task adds `step` (and any `extra` networks)."""

    kind: ClassVar[type[BaselineKind]]

    def __init__(self, cfg: BaselineRunConfig, run_dir: Path, accelerator: Accelerator):
        tc = cfg.train
        self.data = load_dataset(cfg.data.source, cfg.data.data_dir, cfg.data.split, cfg.data.image_size,
                                 cfg.data.channels)
        self.network_config = fill_model_section(cfg, self.data.shape, self.data.num_classes, self.data.name)
        self.cfg, self.config = cfg, cfg.to_dict()
        self.objective = cfg.objective
        torch.manual_seed(derive_seed(tc.seed, INIT_KEY))  # identical initial weights on every process
        self.model = self.kind.network(cfg.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, betas=tc.adam_betas,
                                          weight_decay=tc.weight_decay)
        self.extra: dict[str, Any] = {}
        self.base_lr = {"model": tc.lr}
        self.files: dict[str, bytes] = {}
        self.num_examples = len(self.data)
        self.dims = math.prod(self.data.shape)
        warn_if_oversized(cfg.preset, self.data.shape, accelerator.is_main_process)
        cond = ", class-conditional" if tc.class_conditional else ""
        self.description = f"{self.kind.name} on {self.data.name} ({len(self.data)} images {self.data.shape}){cond}"

    def batch(self, ctx: StepContext, indices: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """This process's rows of the step's global batch (or of `indices`): images in [-1, 1] on the device (flipped
        at random when data.hflip; the flips drawn from the step's generator for the whole batch) and labels."""
        idx = (ctx.indices if indices is None else indices)
        flip = torch.rand(len(idx), generator=ctx.generator) < 0.5
        idx, flip = idx[ctx.mine], flip[ctx.mine]
        x = to_model_range(self.data.images[idx])
        if self.cfg.data.hflip:
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        y = self.data.labels[idx].to(ctx.device) if self.cfg.train.class_conditional else None
        return x.to(ctx.device), y

    def state_dict(self, ema_weights: dict[str, Tensor]) -> dict[str, Any]:
        """Nothing beyond the networks and optimizers."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    @torch.no_grad()
    def preview(self, ema_weights: dict[str, Tensor], path: Path) -> Path:
        """cfg.preview_n samples of the EMA weights from fixed latents (comparable across steps); classes in turn."""
        with torch.random.fork_rng(devices=[]):  # building the network draws initial weights: leave no trace
            net = self.kind.network(self.cfg.model)
            net.load_state_dict(ema_weights)
            net.eval()
            n = self.cfg.preview_n
            y = torch.arange(n) % self.cfg.model["num_classes"] if self.cfg.model.get("num_classes") else None
            x = self.kind.sample(net, n, generator(self.cfg.train.seed, PREVIEW_KEY), y)
        return save_grid(from_model_range(x), path, nrow=int(math.ceil(math.sqrt(n))))


__all__ = ["BaselineKind", "BaselineTask", "PREVIEW_KEY", "fill_model_section"]
