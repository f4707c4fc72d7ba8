"""The guidance commands end to end on a tiny class-conditional digits run trained here:
sample --class/--guidance-scale/--classifier, train-classifier, inpaint, edit, and their one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusionlab.cli import main
from helpers import TINY
from test_cli import _assert_clean_error


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI's main() in this process (a subprocess per call costs seconds of imports), stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors
            code = int(e.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A class-conditional run, an unconditional one, and a noisy classifier for the first."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("guidance")
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    for name, extra in (("cond", ["--class-conditional", "--steps", "4"]), ("uncond", ["--steps", "1"])):
        proc = run_cli("train", "--config", str(cfg), *extra, "--out", str(root / name))
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("train-classifier", str(root / "cond"), "--steps", "3", "--batch-size", "16", "--base-channels", "8",
                   "--eval-n", "20", "--out", str(root / "clf"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("%\n") >= 10 and "mean" in proc.stdout  # accuracy by t, 10 buckets
    meta = json.loads((root / "clf" / "classifier.json").read_text())
    assert len(meta["accuracy_by_t"]) == 10 and meta["schedule"] == {"name": "cosine", "T": 100}
    return {"cond": root / "cond", "uncond": root / "uncond", "clf": root / "clf", "root": root}


def images_of(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
        return f["images"]


def test_guided_sampling(runs: dict[str, Path], tmp_path: Path) -> None:
    cond = str(runs["cond"])
    proc = run_cli("sample", cond, "--n", "6", "--steps", "4", "--class", "all", "--guidance-scale", "3", "--out", str(tmp_path / "g.npz"))
    assert proc.returncode == 0, proc.stderr
    assert "NFE 4 per sample" in proc.stdout and "S = 3 (2 network passes, batched per NFE)" in proc.stdout
    assert images_of(tmp_path / "g.npz").shape == (6, 8, 8) and (tmp_path / "g.png").exists()
    with np.load(tmp_path / "g.npz", allow_pickle=False) as f:  # --class all: classes 0, 1, 2, ... in turn, stored
        assert np.array_equal(f["labels"], np.arange(6) % 10) and f["labels"].dtype == np.int64
    # S = 0 is the unconditional model: the same images as sampling without --class, draw for draw.
    run_cli("sample", cond, "--n", "4", "--steps", "4", "--class", "3", "--guidance-scale", "0", "--out", str(tmp_path / "s0.npz"))
    run_cli("sample", cond, "--n", "4", "--steps", "4", "--out", str(tmp_path / "u.npz"))
    assert np.array_equal(images_of(tmp_path / "s0.npz"), images_of(tmp_path / "u.npz"))
    proc = run_cli("sample", cond, "--n", "4", "--steps", "4", "--class", "1", "--guidance-scale", "0",
                   "--classifier", str(runs["clf"]), "--classifier-scale", "5", "--out", str(tmp_path / "c.npz"))
    assert proc.returncode == 0, proc.stderr
    assert "classifier scale W = 5" in proc.stdout
    assert not np.array_equal(images_of(tmp_path / "c.npz"), images_of(tmp_path / "u.npz"))


def test_inpaint_and_edit(runs: dict[str, Path], tmp_path: Path) -> None:
    cond = str(runs["cond"])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :4] = 255  # left half known
    Image.fromarray(mask).save(tmp_path / "mask.png")
    proc = run_cli("inpaint", cond, "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--n", "3",
                   "--steps", "5", "--resample", "2", "--jump", "2", "--class", "4", "--guidance-scale", "2",
                   "--out", str(tmp_path / "ip.npz"))
    assert proc.returncode == 0, proc.stderr
    out = images_of(tmp_path / "ip.npz")
    assert out.shape == (3, 8, 8)
    assert np.array_equal(out[:, :, :4], np.broadcast_to(img[:, :4], (3, 8, 4)))  # known pixels exactly
    assert not np.array_equal(out[:, :, 4:], np.broadcast_to(img[:, 4:], (3, 8, 4)))
    np.save(tmp_path / "in.npy", img)
    for sampler in ("ddim", "ddpm"):
        proc = run_cli("edit", cond, "--image", str(tmp_path / "in.npy"), "--strength", "0", "--n", "2", "--sampler", sampler,
                       "--steps", "5", "--out", str(tmp_path / "e0.npz"), "--overwrite")  # the same file twice
        assert proc.returncode == 0, proc.stderr
        assert np.array_equal(images_of(tmp_path / "e0.npz"), np.stack([img, img]))  # strength 0: the input
    proc = run_cli("edit", cond, "--image", str(tmp_path / "ip.npz"), "--strength", "0.6", "--steps", "5", "--n", "1",
                   "--out", str(tmp_path / "e.npz"))
    assert proc.returncode == 0, proc.stderr
    assert images_of(tmp_path / "e.npz").shape == (3, 8, 8) and "NFE 3 per output" in proc.stdout  # round(0.6 * 5) steps


def test_bad_guidance_inputs_give_one_line_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    cond, uncond = str(runs["cond"]), str(runs["uncond"])
    _assert_clean_error(run_cli("sample", cond, "--class", "10", "--n", "2"), "class 10 is out of range", "0..9")
    _assert_clean_error(run_cli("sample", cond, "--class", "-1", "--n", "2"), "class -1 is out of range")
    _assert_clean_error(run_cli("sample", uncond, "--class", "1", "--n", "2"), "unconditional")
    _assert_clean_error(run_cli("sample", cond, "--guidance-scale", "2", "--n", "2"), "need --class")
    _assert_clean_error(run_cli("sample", cond, "--class", "1", "--guidance-scale", "-1", "--n", "2"), "--guidance-scale")
    _assert_clean_error(run_cli("sample", cond, "--class", "1", "--classifier", str(tmp_path)), "not a classifier folder")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "grey.png")
    ip = ["inpaint", cond, "--image", str(tmp_path / "in.png"), "--steps", "2", "--n", "1", "--mask"]
    _assert_clean_error(run_cli(*ip, str(tmp_path / "small.png")), "small.png", "6x6")
    _assert_clean_error(run_cli(*ip, str(tmp_path / "grey.png")), "must be binary", "128")
    _assert_clean_error(run_cli("inpaint", cond, "--image", str(tmp_path / "small.png"), "--mask", str(tmp_path / "in.png")),
                        "1x6x6")
    _assert_clean_error(run_cli("edit", cond, "--image", str(tmp_path / "in.png"), "--strength", "1.5"), "strength must be in [0, 1]")
    _assert_clean_error(run_cli("edit", cond, "--image", str(tmp_path / "none.png"), "--strength", "0.5"), "none.png")
    _assert_clean_error(run_cli("train-classifier", "--out", str(tmp_path / "c")), "RUN_DIR")
