"""Fixtures shared by the test files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import TINY, TINY_NET

# The suite's numbers must not depend on the CPU it runs on: "auto" precision is bf16 on a CPU with native bf16 and
# float32 elsewhere (training/precision.py), so the suite pins float32 (the environment reaches the CLI subprocesses
# too). test_precision.py tests auto and bf16 themselves.
os.environ.setdefault("DIFFUSIONLAB_MIXED_PRECISION", "no")


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A JSON config file for a very small digits UNet."""
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(TINY))
    return p


@pytest.fixture
def tiny_net_config(tmp_path: Path) -> Path:
    """A JSON config file for a very small UNet, with no process settings (for any family)."""
    p = tmp_path / "tiny_net.json"
    p.write_text(json.dumps(TINY_NET))
    return p


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: small tensors do not pay for threads, and on a shared 2-core box they cost 10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
