"""The in-memory image dataset container, pixel-range conversions, and shared array helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from diffusionlab.errors import DataError
from diffusionlab.validation import require_memory


@dataclass(eq=False, repr=False)  # tensors make the generated __eq__/__repr__ useless or huge
class ImageDataset:
    """A whole dataset held in memory as uint8 images (N, C, H, W), 0 = black .. 255 = white."""

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int | None
    name: str
    class_names: list[str] | None = None
    captions: list[str] | None = None  # one text per image, for text-to-image (data/captions.py)

    def __post_init__(self) -> None:
        # Validate once here so every consumer can rely on the contract without re-checking.
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            got = (
                f"{self.images.dtype} {tuple(self.images.shape)}"
                if isinstance(self.images, torch.Tensor)
                else type(self.images).__name__
            )
            raise DataError(f"{self.name}: images must be a uint8 tensor (N, C, H, W), got {got}")
        if self.labels is not None:
            if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
                raise DataError(f"{self.name}: labels must be an int64 tensor (N,), got {self.labels.dtype} "
                                f"{tuple(self.labels.shape)}")
            if self.labels.shape[0] != self.images.shape[0]:
                raise DataError(f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images")
        if self.captions is not None:
            if len(self.captions) != self.images.shape[0]:
                raise DataError(f"{self.name}: {len(self.captions)} captions for {self.images.shape[0]} images")
            for i, text in enumerate(self.captions):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{self.name}: caption {i} is empty")

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        """Number of channels C (1 = grayscale, 3 = RGB)."""
        return int(self.images.shape[1])

    @property
    def height(self) -> int:
        """Image height H in pixels."""
        return int(self.images.shape[2])

    @property
    def width(self) -> int:
        """Image width W in pixels."""
        return int(self.images.shape[3])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        return (self.channels, self.height, self.width)

    def __repr__(self) -> str:
        labels = "unlabelled" if self.labels is None else f"{self.num_classes} classes"
        captions = ", captioned" if self.captions is not None else ""
        return f"ImageDataset(name={self.name!r}, n={len(self)}, shape={self.shape}, {labels}{captions})"


# The model range of pixels (docs/maths.md notation: data x0 scaled to [-1, 1]); 0 maps to -1 and 255 to 1.
PIXEL_RANGE = (-1.0, 1.0)


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 in [-1, 1] (x / 127.5 - 1)."""
    # Refuse other dtypes: a float image already in [0, 1] would otherwise silently land near -1.
    if images_u8.dtype != torch.uint8:
        raise TypeError(f"to_model_range expects a uint8 tensor, got {images_u8.dtype}")
    return images_u8.to(torch.float32) / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Map floats in [-1, 1] to uint8 pixels (clamped and rounded)."""
    # NaN would make the uint8 cast undefined; map it to 0 (mid-grey) so a diverged sample is visible, not random.
    x = torch.nan_to_num(x.detach().to(torch.float32), nan=0.0)
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def labels_tensor(labels: np.ndarray | None) -> torch.Tensor | None:
    """Convert an integer label array to the int64 tensor ImageDataset stores."""
    if labels is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def images_tensor(images_nchw: np.ndarray) -> torch.Tensor:
    """Convert a uint8 (N, C, H, W) array to an owned, contiguous torch tensor."""
    # np.frombuffer views are read-only; copying gives torch memory it may write to.
    return torch.from_numpy(np.array(images_nchw, dtype=np.uint8, order="C", copy=True))


def check_image_options(image_size: int | None, channels: int | None) -> None:
    """Reject image_size / channels values the loaders cannot honour."""
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 (N, C, H, W) images between 1 and 3 channels."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if have == 3 and channels == 1:
        # ITU-R 601-2 luma, the same weights Pillow uses for RGB -> "L", in integer arithmetic.
        rgb = images.astype(np.uint32)
        luma = (rgb[:, 0] * 299 + rgb[:, 1] * 587 + rgb[:, 2] * 114 + 500) // 1000
        return luma[:, None].astype(np.uint8)
    raise DataError(f"cannot convert {have}-channel images to {channels} channels")


def resize_pil(img: Image.Image, size: int) -> Image.Image:
    """Center-crop a PIL image to a square, then resize it to size x size (bicubic, anti-aliased)."""
    w, h = img.size
    if w != h:
        # Crop rather than stretch so faces/objects keep their aspect ratio.
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size == (size, size):
        return img
    return img.resize((size, size), Image.Resampling.BICUBIC)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Center-crop uint8 (N, C, H, W) images to a square, then resize them to (N, C, size, size), bicubic."""
    n, c, h, w = images.shape
    # The resized copy is allocated whole: refuse a size that cannot fit before trying (image_size 4096 on MNIST).
    require_memory(n * c * size * size, f"image_size {size}", f"{n:,} resized images")
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        images = images[:, :, top:top + side, left:left + side]
    if images.shape[2] == size:
        return images
    out = np.empty((n, c, size, size), dtype=np.uint8)
    # One vectorised torch call per chunk instead of a Pillow call per image (60k MNIST: ~1 s instead of ~6 s).
    # antialias=True makes downsampling match Pillow's bicubic, which widens the kernel to avoid aliasing.
    chunk = 4096
    for start in range(0, n, chunk):
        batch = torch.from_numpy(images[start:start + chunk].astype(np.float32))
        res = torch.nn.functional.interpolate(batch, size=(size, size), mode="bicubic", align_corners=False,
                                              antialias=True)
        out[start:start + chunk] = res.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def adapt(images: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    """Apply the optional channels / image_size conversion to uint8 (N, C, H, W) images."""
    # Resize while the image has the fewest channels: grey -> RGB after resizing, RGB -> grey before.
    if channels is not None and channels < images.shape[1]:
        images = convert_channels(images, channels)
    if image_size is not None:
        images = resize_images(images, image_size)
    if channels is not None and channels > images.shape[1]:
        images = convert_channels(images, channels)
    return images
