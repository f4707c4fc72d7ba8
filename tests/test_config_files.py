"""Config files in YAML and TOML as well as JSON (--config): the same sections give the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffusionlab.errors import ConfigError
from diffusionlab.training.config import read_config_file

from helpers import TINY, run_cli

YAML = """
model: {base_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_resolutions: [4], num_heads: 1, groups: 8}
process: {T: 100}
train:
  batch_size: 16
  log_every: 2
  checkpoint_every: 4
  sample_every: 1000
  warmup_steps: 2
  keep_checkpoints: 100
  lr: 1e-3        # YAML 1.1 would read this as a string; the loader reads YAML 1.2 numbers
sample: {n: 4, steps: 3}
"""
TOML = """
[model]
base_channels = 8
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [4]
num_heads = 1
groups = 8

[process]
T = 100

[train]
batch_size = 16
log_every = 2
checkpoint_every = 4
sample_every = 1000
warmup_steps = 2
keep_checkpoints = 100
lr = 1e-3

[sample]
n = 4
steps = 3
"""


def test_yaml_toml_and_json_read_the_same(tmp_path: Path):
    expected = json.loads(json.dumps(TINY))
    expected["train"]["lr"] = 1e-3
    for name, text in (("c.yaml", YAML), ("c.yml", YAML), ("c.toml", TOML), ("c.json", json.dumps(expected))):
        (tmp_path / name).write_text(text)
        assert read_config_file(tmp_path / name) == expected, name
    assert isinstance(read_config_file(tmp_path / "c.yaml")["train"]["lr"], float)


@pytest.mark.parametrize("name,text,message", [
    ("bad.yaml", "train: [1, 2\n", "is not valid YAML"),
    ("bad.toml", "[train\nlr = 1\n", "is not valid TOML"),
    ("list.yaml", "- 1\n- 2\n", "must hold a YAML object"),
    ("nan.yaml", "train: {lr: .nan}\n", None),  # read; refused by the range check (below)
])
def test_bad_yaml_and_toml_are_one_line_errors(tmp_path: Path, name: str, text: str, message: str | None):
    (tmp_path / name).write_text(text)
    if message is None:
        res = run_cli("train", "--config", str(tmp_path / name), "--out", str(tmp_path / "r"))
        assert res.returncode == 2 and "train.lr" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        return
    with pytest.raises(ConfigError, match=message):
        read_config_file(tmp_path / name)


def test_a_yaml_config_trains_through_the_cli(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text(YAML)
    res = run_cli("train", "--config", str(tmp_path / "tiny.yaml"), "--steps", "1", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["lr"] == 1e-3 and cfg["model"]["base_channels"] == 8 and cfg["process"]["T"] == 100
