"""Captions of a user's image folder, in the ecosystem's two conventions (for text-to-image, issue 15).

- `metadata.jsonl` at the folder's root, one JSON object per line with `file_name` (a path relative to the folder)
  and `text`, as Hugging Face `datasets`' imagefolder reads it;
- or a `.txt` sidecar beside each image (`img001.png` + `img001.txt`), the convention of most fine-tuning scripts.

Either way every image needs exactly one non-empty caption: a missing, empty or unreadable one is a one-line error
that names the file (a silently uncaptioned image would train the model on the empty prompt).
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusionlab.errors import DataError

METADATA = "metadata.jsonl"
CAPTION_KEYS = ("text", "caption")  # HF's imagefolder examples use "text"; "caption" is the other common name


def has_captions(folder: Path, files: list[Path]) -> bool:
    """Whether the folder carries captions: a metadata.jsonl, or a .txt sidecar beside any of its images."""
    return (folder / METADATA).is_file() or any(f.with_suffix(".txt").is_file() for f in files)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read caption file {path}: {getattr(e, 'strerror', None) or e}") from None


def read_metadata(folder: Path) -> dict[str, str]:
    """`file_name` (a POSIX path relative to the folder) -> caption, from metadata.jsonl, with one-line errors."""
    path = folder / METADATA
    out: dict[str, str] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {number} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise DataError(f"{path} line {number} needs a string 'file_name'")
        key = next((k for k in CAPTION_KEYS if k in row), None)
        if key is None:
            raise DataError(f"{path} line {number} ({row['file_name']}) has no 'text'")
        text = row[key]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path} line {number} ({row['file_name']}) has an empty caption")
        name = Path(row["file_name"]).as_posix()
        if name in out:
            raise DataError(f"{path} line {number}: {name} is captioned twice")
        out[name] = text.strip()
    if not out:
        raise DataError(f"{path} holds no captions")
    return out


def folder_captions(folder: Path, files: list[Path]) -> list[str]:
    """One caption per image file, from metadata.jsonl (if present) or the .txt sidecars; one-line errors."""
    if (folder / METADATA).is_file():
        table = read_metadata(folder)
        captions = []
        for f in files:
            rel = f.relative_to(folder).as_posix()
            if rel not in table:
                raise DataError(f"image {f} has no caption in {folder / METADATA} (no line with file_name {rel!r})")
            captions.append(table[rel])
        unknown = sorted(set(table) - {f.relative_to(folder).as_posix() for f in files})
        if unknown:
            raise DataError(f"{folder / METADATA} captions {len(unknown)} file(s) that are not images in the folder, "
                            f"e.g. {unknown[0]!r}")
        return captions
    captions = []
    for f in files:
        sidecar = f.with_suffix(".txt")
        if not sidecar.is_file():
            raise DataError(f"image {f} has no caption: expected {sidecar.name} beside it (or a {METADATA})")
        text = _read_text(sidecar).strip()
        if not text:
            raise DataError(f"caption file {sidecar} is empty")
        captions.append(text)
    return captions


__all__ = ["CAPTION_KEYS", "METADATA", "folder_captions", "has_captions", "read_metadata"]
