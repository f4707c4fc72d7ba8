"""Fixtures shared by the test files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A JSON config file for a very small digits UNet."""
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(TINY))
    return p
