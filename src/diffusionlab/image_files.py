"""Input images and inpainting masks from files, checked against the model's image shape (one-line errors).

Images: a PNG/JPEG/BMP file (one image), a .npy array ((H, W), (H, W, C), (N, H, W) or (N, H, W, C)),
or a samples .npz from `diffusionlab sample` (its `images` array). Masks: 1 = known pixel (kept), 0 =
unknown (generated); a PNG of 0 and 255 (or 0 and 1), or a .npy of 0/1 (or booleans), of shape (H, W) or
with the image's channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .data.npz import to_nchw, to_uint8
from .errors import ConfigError, DataError
from .evaluation.digits import load_npz_images

PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def _read_array(path: Path, what: str, channels: int) -> np.ndarray:
    """The raw array of an image/mask file: (H, W, C) or (N, H, W[, C]) as stored."""
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in PICTURES:
            with Image.open(path) as img:
                return np.asarray(img.convert("L" if channels == 1 else "RGB"))
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as e:
        raise ConfigError(f"{what} file {path} is not readable ({str(e).splitlines()[0][:100]})") from None
    if suffix == ".npz" and what == "image":
        return load_npz_images(path)
    raise ConfigError(f"{what} file {path} must be {', '.join(PICTURES)} or .npy" + (" or .npz" if what == "image" else ""))


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _read_folder(path: Path, channels: int) -> np.ndarray:
    """The pictures of a folder (sorted by name) stacked as (N, H, W[, C]); they must share one size."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURES and p.is_file())
    if not files:
        raise ConfigError(f"image folder {path} holds no pictures ({', '.join(PICTURES)})")
    arrays = [_read_array(f, "image", channels) for f in files]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ConfigError(f"the pictures in {path} differ in size ({', '.join(sorted(_fmt(s) for s in sizes)[:3])}); "
                          "give images of one size")
    return np.stack(arrays)


def load_images(path: str | Path, shape: tuple[int, int, int], role: str = "the model makes") -> Tensor:
    """uint8 images (N, C, H, W) from a file or a folder of pictures; they must have the (C, H, W) `role` names."""
    path = Path(path)
    c, h, w = shape
    arr = _read_folder(path, c) if path.is_dir() else _read_array(path, "image", c)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[:2] == (h, w)):
        arr = arr[None]  # one image
    try:
        arr = to_uint8(to_nchw(arr, path), path)
    except DataError as e:
        raise ConfigError(str(e)) from None
    if arr.shape[1] != c and arr.shape[1] == 3 and c == 1:
        raise ConfigError(f"image {path} is RGB, {role} grayscale images")
    if tuple(arr.shape[1:]) != shape:
        raise ConfigError(f"image {path} is {_fmt(arr.shape[1:])} (CxHxW), {role} {_fmt(shape)}")
    return torch.from_numpy(np.array(arr))  # a writable copy


def load_mask(path: str | Path, shape: tuple[int, int, int]) -> Tensor:
    """A binary float mask (1 | C, H, W) from `path`, 1 = known; wrong shapes and non-binary values are errors."""
    path = Path(path)
    arr = _read_array(path, "mask", 1)
    top = 255 if path.suffix.lower() in PICTURES and np.max(arr, initial=0) > 1 else 1
    return check_mask(arr, shape, f"mask {path}", top)


def check_mask(mask: np.ndarray | Tensor, shape: tuple[int, int, int], what: str = "the mask",
               top: int = 1) -> Tensor:
    """A binary mask array (H, W), (1 | C, H, W) or (H, W, C), 0/`top` or bool, as float (1 | C, H, W), 1 = known."""
    c, h, w = shape
    arr = np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == c and arr.shape[:2] == (h, w) and arr.shape[0] != c:
        arr = arr.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (h, w) or arr.shape[0] not in (1, c):
        raise ConfigError(f"{what} has shape {_fmt(arr.shape)}, the image is {_fmt(shape)} (CxHxW): "
                          f"give an {h}x{w} mask")
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, top}:
        odd = [v for v in values.tolist() if v not in (0, top)][:3]
        raise ConfigError(f"{what} must be binary ({'0/255' if top == 255 else '0/1'}: 1 = known, 0 = generate); "
                          f"found values {', '.join(f'{v:g}' for v in odd)}")
    return torch.from_numpy((arr == top).astype(np.float32))


__all__ = ["check_mask", "load_images", "load_mask"]
