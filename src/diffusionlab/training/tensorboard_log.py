"""`train.log = "tensorboard"` (`--log tensorboard`): the metrics.jsonl rows and the preview grids, also as TensorBoard
event files in RUN/tensorboard/ (`tensorboard --logdir RUN`). metrics.jsonl stays the record; this is a view of it.

torch.utils.tensorboard writes the files; it needs the `tensorboard` package (pip install tensorboard), which
`OptimConfig.validate` checks before any work.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

LOGS = ("jsonl", "tensorboard")  # train.log: metrics.jsonl alone, or metrics.jsonl and TensorBoard
DIR = "tensorboard"


def check_available() -> None:
    """A one-line error, before any work, when the tensorboard package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or leave --log out: metrics.jsonl is always written)")


class TensorBoardLog:
    """Scalars (train/NAME) of every metrics row and the preview grids (samples), at their training step."""

    def __init__(self, run_dir: Path, start: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run continues from its checkpoint at `start`, so the events the killed run logged
        # after it are hidden, as metrics.jsonl's rows after it are truncated.
        self.writer = SummaryWriter(log_dir=str(run_dir / DIR), purge_step=start + 1 if start else None, flush_secs=30)

    def scalars(self, row: dict[str, Any]) -> None:
        """One metrics.jsonl row."""
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", float(value), step)
        self.writer.flush()

    def grid(self, path: Path, step: int) -> None:
        """A preview grid PNG."""
        from PIL import Image

        arr = np.asarray(Image.open(path).convert("RGB"))
        self.writer.add_image("samples", arr, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


__all__ = ["DIR", "LOGS", "TensorBoardLog", "check_available"]
