"""A folder of image files (PNG, JPEG, ...), optionally with one subfolder per class, and optionally captioned
(a metadata.jsonl or .txt sidecars: data/captions.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from diffusionlab.data.captions import folder_captions, has_captions
from diffusionlab.data.dataset import ImageDataset, images_tensor, labels_tensor, resize_pil
from diffusionlab.errors import DataError
from diffusionlab.validation import require_memory

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def _is_hidden(path: Path) -> bool:
    """Dot-files and dot-folders (.DS_Store, .ipynb_checkpoints, ...) are never data."""
    return path.name.startswith(".")


def _image_files(directory: Path) -> list[Path]:
    """All image files under directory, recursively, in sorted (deterministic) order."""
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(_is_hidden(part) for part in p.relative_to(directory).parents if part.name)
                  and not _is_hidden(p))


def _open(path: Path, header_only: bool = False) -> Image.Image:
    """Open (and unless header_only, fully decode) one image; any failure becomes a DataError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's palette-transparency warnings are not our user's problem
            with Image.open(path) as img:
                if header_only:
                    return img  # mode and size are known from the header; the pixels are never touched
                img.load()
                if img.mode == "P":
                    # Resolve the palette now so mode checks below see real colours.
                    return img.convert("RGBA" if "transparency" in img.info else "RGB")
                return img.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """Rescale 16-bit / 32-bit / float grayscale to 8 bits (Pillow's own "L" conversion clips instead)."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        peak = 1.0 if arr.max() <= 1.0 else 255.0  # float images are conventionally in [0, 1]
    else:
        peak = 65535.0 if arr.max() > 255 else 255.0  # 16-bit PNGs use the full 0..65535 range
    return Image.fromarray(np.clip(np.rint(arr * 255.0 / peak), 0, 255).astype(np.uint8), "L")


def load_folder(data_dir: Path, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """Load every image under data_dir; subfolders (sorted by name) become class labels."""
    if not data_dir.is_dir():
        raise DataError(f"image folder {data_dir} does not exist or is not a directory")
    if split == "test":
        raise DataError(f"image folder {data_dir} has no test split (use split 'train' or 'all')")
    class_dirs = sorted((p for p in data_dir.iterdir() if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)
    files: list[Path] = []
    labels: list[int] | None = None
    if class_dirs:
        # Class-per-subfolder layout (like torchvision's ImageFolder); loose files at the top level are ignored.
        labels = []
        for index, class_dir in enumerate(class_dirs):
            class_files = _image_files(class_dir)
            if not class_files:
                raise DataError(f"class folder {class_dir} contains no images "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += class_files
            labels += [index] * len(class_files)
    else:
        files = _image_files(data_dir)
    if not files:
        raise DataError(f"image folder {data_dir} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")

    if channels is None:
        # Keep grayscale data single-channel: three identical channels would triple the model's input for nothing.
        # Only headers are read here, so this pass is cheap and no image is held in memory twice.
        channels = 1 if all(_open(p, header_only=True).mode in _GRAY_MODES for p in files) else 3
    mode = "L" if channels == 1 else "RGB"
    if image_size is not None:  # every image is resized into memory: refuse a size that cannot fit, before decoding
        require_memory(len(files) * channels * image_size**2, f"image_size {image_size}", f"{len(files):,} images")

    arrays: list[np.ndarray] = []
    first_size = None
    for path in files:
        img = _open(path)
        if img.mode in ("I", "I;16", "F"):
            img = _to_8bit(img)
        img = img.convert(mode)
        if image_size is not None:
            img = resize_pil(img, image_size)
        elif first_size is None:
            first_size = img.size
        elif img.size != first_size:
            raise DataError(f"{path} is {img.size[0]}x{img.size[1]} but {files[0].name} is "
                            f"{first_size[0]}x{first_size[1]}; pass image_size to resize all images")
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))

    label_array = np.asarray(labels, dtype=np.int64) if labels is not None else None
    captions = folder_captions(data_dir, files) if has_captions(data_dir, files) else None
    return ImageDataset(
        images=images_tensor(np.stack(arrays)),
        labels=labels_tensor(label_array),
        num_classes=len(class_dirs) if labels is not None else None,
        name=f"folder:{data_dir.resolve().name or data_dir}",
        class_names=[p.name for p in class_dirs] if labels is not None else None,
        captions=captions,
    )
