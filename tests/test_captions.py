"""Captioned image folders (issue 15, data): metadata.jsonl as HF imagefolder writes it, or .txt sidecars; every
image gets exactly one caption, and anything missing, empty or unreadable is a one-line error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusionlab.data import load_dataset
from diffusionlab.errors import DataError
from helpers import run_cli


def _images(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 6), 40 * i, dtype=np.uint8), "L").save(path)


def _metadata(folder: Path, rows: list) -> None:
    (folder / "metadata.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_metadata_jsonl_captions_every_image_in_file_order(tmp_path: Path):
    _images(tmp_path, ["b.png", "a.png", "c.png"])
    _metadata(tmp_path, [{"file_name": "c.png", "text": "a thin 3"}, {"file_name": "a.png", "text": " a thick 7 "},
                         {"file_name": "b.png", "caption": "two"}])
    data = load_dataset(str(tmp_path), split="train")
    assert data.captions == ["a thick 7", "two", "a thin 3"]  # sorted files a, b, c; stripped; 'caption' accepted
    assert data.images[0, 0, 0, 0] == 40 and data.images[2, 0, 0, 0] == 80  # a.png is image 1 of _images
    assert "captioned" in repr(data)


def test_metadata_paths_are_relative_to_the_folder_with_class_subfolders(tmp_path: Path):
    _images(tmp_path, ["cats/x.png", "dogs/y.png"])
    _metadata(tmp_path, [{"file_name": "dogs/y.png", "text": "a dog"}, {"file_name": "cats/x.png", "text": "a cat"}])
    data = load_dataset(str(tmp_path), split="train")
    assert data.captions == ["a cat", "a dog"] and data.labels.tolist() == [0, 1]


def test_txt_sidecars(tmp_path: Path):
    _images(tmp_path, ["img001.png", "img002.png"])
    (tmp_path / "img001.txt").write_text("first\n")
    (tmp_path / "img002.txt").write_text("second one")
    assert load_dataset(str(tmp_path), split="train").captions == ["first", "second one"]


def test_an_uncaptioned_folder_has_no_captions(tmp_path: Path):
    _images(tmp_path, ["a.png"])
    assert load_dataset(str(tmp_path), split="train").captions is None


@pytest.mark.parametrize("case, words", [
    ("sidecar-missing", ["img002.png", "no caption", "img002.txt"]),
    ("sidecar-empty", ["img002.txt", "is empty"]),
    ("sidecar-binary", ["img002.txt", "cannot read"]),
    ("metadata-missing-image", ["img002.png", "no caption", "metadata.jsonl"]),
    ("metadata-bad-json", ["metadata.jsonl line 2", "not valid JSON"]),
    ("metadata-no-text", ["line 1", "no 'text'"]),
    ("metadata-empty-text", ["line 1", "empty caption"]),
    ("metadata-no-file-name", ["line 1", "file_name"]),
    ("metadata-twice", ["captioned twice"]),
    ("metadata-unknown-file", ["not images in the folder", "ghost.png"]),
    ("metadata-empty", ["holds no captions"]),
])
def test_caption_problems_are_one_line_errors_naming_the_file(case: str, words: list[str], tmp_path: Path):
    _images(tmp_path, ["img001.png", "img002.png"])
    ok = [{"file_name": "img001.png", "text": "one"}, {"file_name": "img002.png", "text": "two"}]
    if case.startswith("sidecar"):
        (tmp_path / "img001.txt").write_text("one")
        if case == "sidecar-empty":
            (tmp_path / "img002.txt").write_text("  \n")
        if case == "sidecar-binary":
            (tmp_path / "img002.txt").write_bytes(b"\xff\xfe\xfa")
    else:
        rows = {
            "metadata-missing-image": ok[:1],
            "metadata-bad-json": [ok[0], "{oops"],
            "metadata-no-text": [{"file_name": "img001.png"}, ok[1]],
            "metadata-empty-text": [{"file_name": "img001.png", "text": ""}, ok[1]],
            "metadata-no-file-name": [{"text": "one"}, ok[1]],
            "metadata-twice": [*ok, ok[0]],
            "metadata-unknown-file": [*ok, {"file_name": "ghost.png", "text": "boo"}],
            "metadata-empty": [],
        }[case]
        _metadata(tmp_path, rows)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path), split="train")
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message, (w, message)


def test_the_cli_reports_a_missing_caption_in_one_line_before_training(tmp_path: Path):
    _images(tmp_path / "data", ["a.png", "b.png"])
    (tmp_path / "data" / "a.txt").write_text("a caption")
    proc = run_cli("train", "--dataset", str(tmp_path / "data"), "--steps", "1", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "b.png" in lines[0] and "b.txt" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_dataset_checks_its_captions():
    import torch

    from diffusionlab.data.dataset import ImageDataset

    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    assert ImageDataset(images, None, None, "x", captions=["a", "b"]).captions == ["a", "b"]
    with pytest.raises(DataError, match="1 captions for 2 images"):
        ImageDataset(images, None, None, "x", captions=["a"])
    with pytest.raises(DataError, match="caption 1 is empty"):
        ImageDataset(images, None, None, "x", captions=["a", " "])
