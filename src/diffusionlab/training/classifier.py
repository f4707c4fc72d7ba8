"""Training the noise-aware classifier f_phi(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, section 4).

Each step draws x0 with its label, t ~ U{1..T} and eps ~ N(0, I) from the diffusion model's own schedule,
forms x_t = q_sample(x0, t, eps) and minimises the cross-entropy of f_phi(y | x_t, t) with AdamW, so the
classifier is valid at every noise level a sampler visits. Randomness is step-derived as in the
diffusion trainer (same seed, same classifier).

On disk (`OUT/`), never pickled, written atomically:
  classifier.safetensors  the weights
  classifier.json         model config, schedule (name, T), dataset, training settings, accuracy by t
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor
from tqdm.auto import tqdm

from ..data import ImageDataset, to_model_range
from ..errors import CheckpointError, ConfigError
from ..models.classifier import ClassifierConfig, NoisyClassifier
from ..processes.ddpm import q_sample
from ..schedules import NoiseSchedule, make_schedule
from ..atomic import atomic_write_folder
from .determinism import BatchStream, derive_seed, generator

WEIGHTS, META = "classifier.safetensors", "classifier.json"
_STEP_KEY, _EVAL_KEY, _INIT_KEY = 0xC1A5, 0xE7A1, 0x1417


@dataclass
class LoadedClassifier:
    """A trained noisy classifier (eval mode) and its metadata: the schedule it was trained on."""

    net: NoisyClassifier
    meta: dict[str, Any]

    @property
    def schedule_name(self) -> str:
        return self.meta["schedule"]["name"]

    @property
    def T(self) -> int:
        return int(self.meta["schedule"]["T"])


@torch.no_grad()
def accuracy_by_t(net: NoisyClassifier, data: ImageDataset, schedule: NoiseSchedule, *, buckets: int = 10,
                  n: int = 1000, seed: int = 0, batch_size: int = 250) -> list[dict[str, Any]]:
    """Accuracy on x_t = q_sample(x0, t, eps) for t drawn uniformly inside each of `buckets` equal ranges of 1..T."""
    if data.labels is None:
        raise ConfigError(f"dataset {data.name} has no labels to measure accuracy on")
    net.eval()
    g = generator(seed, _EVAL_KEY)
    idx = torch.randperm(len(data), generator=g)[: min(n, len(data))]
    edges = torch.linspace(0, schedule.T, buckets + 1).round().long()
    rows = []
    for b in range(buckets):
        lo, hi = int(edges[b]) + 1, int(edges[b + 1])
        correct = 0
        for start in range(0, len(idx), batch_size):
            i = idx[start : start + batch_size]
            x0 = to_model_range(data.images[i])
            t = torch.randint(lo, hi + 1, (len(i),), generator=g)
            x_t = q_sample(schedule, x0, t, torch.randn(x0.shape, generator=g))
            correct += int((net(x_t, t.float()).argmax(1) == data.labels[i]).sum())
        rows.append({"t_from": lo, "t_to": hi, "accuracy": correct / len(idx), "n": len(idx)})
    return rows


def train_classifier(train: ImageDataset, test: ImageDataset, schedule_name: str, T: int, out_dir: Path, *,
                     config: dict[str, Any] | None = None, steps: int = 1000, batch_size: int = 128, lr: float = 1e-3,
                     weight_decay: float = 0.05, seed: int = 0, eval_n: int = 1000, progress: bool = False,
                     source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train f_phi(y | x_t, t) on `train` for `steps` steps; write weights and metadata to out_dir; return the metadata."""
    check_classifier_out(out_dir)
    if train.labels is None or not train.num_classes:
        raise ConfigError(f"dataset {train.name} has no labels: a classifier needs them")
    if steps < 1 or batch_size < 1:
        raise ConfigError("classifier steps and batch size must be >= 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    schedule = make_schedule(schedule_name, T)
    cfg = ClassifierConfig.from_dict({"image_size": train.height, "in_channels": train.channels,
                                      "num_classes": train.num_classes, **(config or {})})
    torch.manual_seed(derive_seed(seed, _INIT_KEY))
    net = NoisyClassifier(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    stream = BatchStream(len(train), seed)
    t0, losses = time.perf_counter(), []
    net.train()
    for step in tqdm(range(1, steps + 1), desc="classifier", disable=not progress):
        g = generator(seed, _STEP_KEY, step)
        idx = stream.batch(step, batch_size)
        x0 = to_model_range(train.images[idx])
        t = torch.randint(1, schedule.T + 1, (len(idx),), generator=g)  # all noise levels, as the sampler visits them
        x_t = q_sample(schedule, x0, t, torch.randn(x0.shape, generator=g))
        loss = F.cross_entropy(net(x_t, t.float()), train.labels[idx])
        for group in opt.param_groups:  # cosine decay after a short warm-up
            group["lr"] = lr * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    by_t = accuracy_by_t(net, test, schedule, n=eval_n, seed=seed)
    meta = {"config": cfg.to_dict(), "schedule": {"name": schedule_name, "T": T}, "dataset": train.name,
            "test_dataset": test.name, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "final_loss": sum(losses[-50:]) / len(losses[-50:]), "train_seconds": seconds,
            "accuracy_by_t": by_t, "accuracy_mean": sum(r["accuracy"] for r in by_t) / len(by_t),
            "source": source or {}}
    # Weights and their JSON in one rename: a reader never sees the new weights with the old metadata.
    atomic_write_folder(out_dir, {WEIGHTS: save({k: v.detach().contiguous() for k, v in net.state_dict().items()}),
                                  META: json.dumps(meta, indent=1).encode()})
    return meta


def check_classifier_out(out_dir: Path) -> None:
    """Before training: `out_dir` is new, empty or an earlier classifier folder (which the result replaces whole);
    never a folder holding anything else, which replacing it would delete."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir():
        others = sorted(p.name for p in out_dir.iterdir() if p.name not in (WEIGHTS, META))
        if others:
            raise ConfigError(f"--out {out_dir} holds other files ({', '.join(others[:3])}); a classifier folder is "
                              "replaced whole, so choose a new or empty folder")


def load_classifier(path: Path) -> LoadedClassifier:
    """Load a classifier folder written by `train_classifier`, with one-line errors."""
    path = Path(path)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not a classifier folder (needs {WEIGHTS} and {META})")
    try:
        meta = json.loads((path / META).read_text())
        net = NoisyClassifier(ClassifierConfig.from_dict(meta["config"]))
        net.load_state_dict(load_file(str(path / WEIGHTS)))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, SafetensorError, RuntimeError) as e:
        raise CheckpointError(f"classifier {path} is corrupt or does not match its config ({str(e).splitlines()[0][:100]})") from None
    net.eval()
    return LoadedClassifier(net, meta)


def guidance_classifier(loaded: LoadedClassifier, schedule_name: str, T: int, num_classes: int | None,
                        image_shape: tuple[int, int, int]) -> Any:
    """The classifier as guidance needs it, `(x_t, t) -> logits`, after checking it fits the diffusion model."""
    c = loaded.net.config
    if (loaded.schedule_name, loaded.T) != (schedule_name, T):
        raise ConfigError(f"the classifier was trained on the {loaded.schedule_name} schedule with T = {loaded.T}, "
                          f"the model uses {schedule_name} with T = {T}")
    if (c.in_channels, c.image_size, c.image_size) != tuple(image_shape):
        raise ConfigError(f"the classifier takes {c.in_channels}x{c.image_size}x{c.image_size} images, the model makes "
                          f"{'x'.join(map(str, image_shape))}")
    if num_classes is not None and num_classes != c.num_classes:
        raise ConfigError(f"the classifier has {c.num_classes} classes, the model {num_classes}")

    def classify(x: Tensor, t: Tensor) -> Tensor:
        return loaded.net(x, t)

    return classify


__all__ = ["LoadedClassifier", "accuracy_by_t", "guidance_classifier", "load_classifier", "train_classifier"]
