"""The `folder32` preset and the warnings a user's own image folder gets: a preset sized for much smaller images,
and a data set smaller than the batch (issue 19: the digits preset ran a 20-image 32x32 RGB folder at batch 128 at
0.2 it/s without a word)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusionlab.training.config import RunConfig, preset_config
from diffusionlab.training.presets import size_warning

from helpers import TINY, run_cli


@pytest.mark.parametrize("preset, shape, warns", [
    ("digits", (3, 32, 32), True),  # 48x the values of an 8x8 digit
    ("digits", (1, 8, 8), False),
    ("digits", (1, 14, 14), False),  # 3x: within the preset's reach
    ("digits-gan", (3, 32, 32), True),  # a family or baseline preset is sized like its data preset
    ("mnist", (1, 28, 28), False),
    ("mnist", (3, 64, 64), True),
    ("folder32", (3, 32, 32), False),
    ("folder32", (3, 128, 128), True),
    (None, (3, 256, 256), False),  # a config without a preset: the user sized the network
    ("mnist14", (1, 14, 14), False),
])
def test_size_warning_says_when_a_preset_is_too_small_for_the_data(preset, shape, warns):
    text = size_warning(preset, shape)
    assert (text is not None) == warns
    if warns and shape == (3, 32, 32):
        assert "--preset folder32" in text and "48x" in text


def test_folder32_is_a_32x32_rgb_recipe_with_flips():
    cfg = RunConfig.from_dict(preset_config("folder32"))
    d = cfg.data
    assert (d.source, d.image_size, d.channels, d.hflip, d.split) == ("folder", 32, 3, True, "all")
    assert cfg.model["attention_resolutions"] == [8] and cfg.train.batch_size <= 64


def _folder(root: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


def test_a_small_rgb_folder_on_the_default_preset_warns_before_training(tmp_path: Path):
    data = _folder(tmp_path / "pics", 20, 32)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": {**TINY["model"], "attention_resolutions": []}, "process": TINY["process"]}))
    res = run_cli("train", "--dataset", "folder", "--data-dir", str(data), "--config", str(config), "--preset",
                  "digits", "--steps", "1", "--batch-size", "128", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert any("preset digits is sized for 1x8x8 images; these are 3x32x32" in ln and "--preset folder32" in ln
               for ln in lines), res.stderr
    assert any("20 images, fewer than the batch of 128" in ln for ln in lines), res.stderr


def test_folder32_trains_and_samples_a_folder_without_warnings(tmp_path: Path):
    data = _folder(tmp_path / "pics", 70, 40)  # resized to 32x32 by the preset
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": {**TINY["model"], "attention_resolutions": [16]}}))
    res = run_cli("train", "--preset", "folder32", "--data-dir", str(data), "--config", str(config), "--steps", "2",
                  "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    assert "warning:" not in res.stderr, res.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["preset"] == "folder32" and saved["data"]["hflip"] is True
    res = run_cli("sample", str(tmp_path / "run"), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.npz"))
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (2, 32, 32, 3)
