"""The README's examples run: every ```python block (the "Python API" section's is run by test_api.py, with the
training it shows), and every `diffusionlab ...` line of its ```bash blocks names only flags that command has; the
lines without placeholders parse as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusionlab as dl
from diffusionlab.cli import build_parser

from helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[tuple[str, str]]:
    """(section heading, code) of every ```lang block, in order."""
    out, heading = [], ""
    for part in re.split(r"(^## .*$)", README, flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        out += [(heading, code) for code in re.findall(rf"^```{lang}\n(.*?)^```", part, re.S | re.M)]
    return out


def test_python_blocks_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocks = [code for heading, code in _blocks("python") if heading != "Python API"]
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dl.train({**TINY, "train": {**TINY["train"], "steps": 4}}, "runs/digits", progress=False)  # "runs/digits"
        namespace: dict = {}
        for code in blocks:  # in README order, one namespace: a later block may use an earlier block's `run`
            exec(compile(code, "README.md", "exec"), namespace)
    finally:
        torch.set_num_threads(before)
    x, res = namespace["x"], namespace["res"]
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0 + 1e-6  # the library example clips x0 as the CLI does
    assert res.images.shape == (64, 1, 8, 8) and res.nfe > 0
    assert np.isfinite(res.images.numpy()).all()


def _commands() -> dict[str, set[str]]:
    sub = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps no public handle
    return {name: {flag for a in p._actions for flag in a.option_strings} for name, p in sub.items()}


def _lines() -> list[str]:
    lines = []
    for _, code in _blocks("bash"):
        for line in code.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("diffusionlab "):
                lines.append(line)
    return lines


def test_every_command_line_in_the_readme_names_real_flags():
    commands = _commands()
    lines = _lines()
    assert len(lines) > 40
    for line in lines:
        words = line.split()
        command = words[1]
        assert command in commands, line
        flags = {w.strip("[]").split("=")[0] for w in words if w.strip("[]").startswith("--")}
        unknown = flags - commands[command]
        assert not unknown, f"README: {line!r} names {sorted(unknown)}, which `diffusionlab {command}` does not have"


PLACEHOLDER = re.compile(r"[\[\]{}|]|\.\.\.|\b[A-Z][A-Z_0-9]+\b")


def test_concrete_command_lines_parse():
    parser = build_parser()
    concrete = [ln for ln in _lines() if not PLACEHOLDER.search(ln.replace("DIR", "dir"))]
    assert len(concrete) >= 15
    for line in concrete:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as e:
            pytest.fail(f"README: {line!r} does not parse (exit {e.code})")
