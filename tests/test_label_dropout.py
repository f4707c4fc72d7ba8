"""Classifier-free guidance training: the trainer drops labels to the null token at the configured rate.

The labels are observed where they are used -- the network's forward pass inside the real training loop --
by wrapping the network the trainer builds. With batch B and S steps, the null fraction is a binomial
proportion: within 4 standard errors of p_uncond, and the kept labels are the images' true labels
(every class present, never the null token when p_uncond = 0).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import diffusionlab.training.trainer as trainer
from diffusionlab.training.config import RunConfig, deep_update, preset_config
from helpers import TINY, record_training_conditions


def labels_seen_in_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, p_uncond: float, steps: int = 6) -> torch.Tensor:
    seen = record_training_conditions(monkeypatch)
    over = deep_update(TINY, {"train": {"class_conditional": True, "label_dropout": p_uncond, "batch_size": 256,
                                        "steps": steps, "checkpoint_every": 1000, "log_every": 1000},
                              "sample": {"n": 2, "steps": 1}, "model": {"channel_mult": [1], "attention_resolutions": []}})
    cfg = RunConfig.from_dict(deep_update(preset_config("digits"), json.loads(json.dumps(over))))
    trainer.train(cfg, tmp_path / f"run{p_uncond}", progress=False)
    return torch.cat(seen)


def test_labels_are_dropped_at_the_configured_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    y = labels_seen_in_training(tmp_path, monkeypatch, 0.25)
    n, null = len(y), 10  # digits: 10 classes, null label = 10
    assert n == 6 * 256
    frac = (y == null).double().mean().item()
    assert abs(frac - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n), frac
    kept = y[y != null]
    assert set(kept.tolist()) == set(range(10))  # real labels pass through
    none = labels_seen_in_training(tmp_path, monkeypatch, 0.0, steps=1)
    assert not bool((none == null).any())
