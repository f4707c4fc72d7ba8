"""`train --log tensorboard`: the event files hold exactly the metrics.jsonl rows and the preview grids, and a resumed
run hides what the killed run logged after its checkpoint (TensorBoard's purge_step)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import run_cli


def _events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_tensorboard_events_equal_the_metrics_rows(tiny_config: Path, tmp_path: Path):
    run = tmp_path / "run"
    res = run_cli("train", "--config", str(tiny_config), "--steps", "6", "--log-every", "2", "--sample-every", "3",
                  "--log", "tensorboard", "--out", str(run))
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "config.json").read_text())["train"]["log"] == "tensorboard"
    acc = _events(run)
    rows = _metrics(run)
    for key in ("loss", "lr", "it_per_s", "images_seen"):
        events = acc.Scalars(f"train/{key}")
        assert [e.step for e in events] == [r["step"] for r in rows] == [2, 4, 6]
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)  # float32 in the file
    images = acc.Images("samples")
    assert [e.step for e in images] == [3, 6] and images[0].width > 0 and images[0].height > 0


def test_a_resumed_run_hides_the_events_after_its_checkpoint(tiny_config: Path, tmp_path: Path):
    run = tmp_path / "run"
    common = ["--log-every", "2", "--checkpoint-every", "4", "--log", "tensorboard", "--out", str(run)]
    assert run_cli("train", "--config", str(tiny_config), *common, "--steps", "6").returncode == 0
    # as if killed after step 6: the newest checkpoint is step 6's; drop it so the resume starts at step 4
    shutil.rmtree(run / "checkpoints" / "step_00000006")
    res = run_cli("train", *common, "--steps", "8", "--resume")
    assert res.returncode == 0, res.stderr
    steps = [e.step for e in _events(run).Scalars("train/loss")]
    assert steps == [r["step"] for r in _metrics(run)] == [2, 4, 6, 8]


def test_log_takes_jsonl_or_tensorboard(tiny_config: Path, tmp_path: Path):
    res = run_cli("train", "--config", str(tiny_config), "--steps", "2", "--log", "wandb", "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "wandb" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
