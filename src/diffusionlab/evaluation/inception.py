"""Inception-v3 as used for FID: the TensorFlow 2015-12-05 graph in the layout of pytorch-fid's port.

FID numbers are only comparable when every paper uses the same network, so this is the "FID Inception"
(Heusel et al. 2017's TF graph, ported to PyTorch by pytorch-fid), not torchvision's ImageNet Inception:
  - inputs are resized to 299x299 (bilinear) and scaled from [0, 255] to [-1, 1]; grayscale is repeated to RGB;
  - the 35x35 / 17x17 blocks and the first 8x8 block average-pool WITHOUT counting zero padding (TF semantics),
    and the last 8x8 block max-pools in its pool branch (a quirk of the TF graph, kept for comparability);
  - the classifier has 1008 outputs (the TF graph's label space), used for the Inception Score;
  - "pool3" = the 2048-d global average pool of the last block, the FID feature.

Parameter names equal those of `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's release), so that file
loads directly. Weights are never unpickled from an arbitrary file: a .pth is read only if it is that exact
file (sha256 prefix 6726825d, as in its name), and then with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import temp_name
from ..errors import DataError
from .cache import cache_dir

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
NUM_CLASSES = 1008  # the TF 2015-12-05 graph's label space (1000 ImageNet classes + 8 unused)
FEATURE_DIM = 2048
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TF's value) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, batch norm and ReLU."""
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that ignores the zero padding, as TF's 'SAME' pooling does."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Szegedy et al. 2016, fig. 5): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches along channels."""
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17: strided 3x3, strided double 3x3, and max pool."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the three branches along channels."""
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1; Szegedy et al. 2016, fig. 6)."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches along channels."""
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8: strided 3x3, 7x7-then-strided-3x3, and max pool."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the three branches along channels."""
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8x8 block with expanded 1x3 / 3x1 outputs (Szegedy et al. 2016, fig. 7); pool = 'avg' or 'max'."""

    def __init__(self, c_in: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches (six tensors) along channels."""
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        # The TF graph's last block (Mixed_7c) max-pools here; every other pool branch averages.
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd), self.branch_pool(pooled)], dim=1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3: (N, 3, 299, 299) in [-1, 1] -> (pool3 features (N, 2048), logits (N, 1008))."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool3 features and 1008-way logits of preprocessed images (see `preprocess`)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # 147x147
        x = F.max_pool2d(x, kernel_size=3, stride=2)                       # 73x73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                      # 71x71
        x = F.max_pool2d(x, kernel_size=3, stride=2)                       # 35x35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)                                                   # ... -> 2048 x 8x8
        pool3 = x.mean(dim=(2, 3))  # global average pool = "pool_3:0" of the TF graph
        return pool3, self.fc(pool3)  # no dropout: evaluation only


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) images, C in {1, 3} -> float32 (N, 3, 299, 299) in [-1, 1], as pytorch-fid feeds them."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"Inception expects uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.to(torch.float32) / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB by repetition
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_weights(dest: Path, url: str = FID_WEIGHTS_URL, timeout: float = 60.0) -> Path:
    """Download the official FID Inception weights to `dest` (temp file + rename) and verify their hash."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise DataError(f"downloaded {url} has sha256 {digest[:16]}..., expected {FID_WEIGHTS_SHA256_PREFIX}...; "
                            "not using it")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DataError(f"could not download the Inception weights from {url} ({e}); download the file by hand "
                        f"and pass its path") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from the official .pth (hash-checked, weights_only)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise DataError(f"{path} is not a readable safetensors file ({e})") from None
    if suffix in (".pth", ".pt"):
        # Check the bytes BEFORE any unpickling: only the one published file is accepted (torch hub's
        # convention: the name carries the sha256 prefix), and even that goes through weights_only=True.
        digest = sha256_file(path)
        if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise DataError(f"{path}: refusing to read a .pth file whose sha256 ({digest[:8]}...) is not the "
                            f"official FID Inception weights ({FID_WEIGHTS_SHA256_PREFIX}...); "
                            "convert it to .safetensors instead")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises several types for a bad archive
            raise DataError(f"{path} could not be read as weights ({type(e).__name__}: {e})") from None
        if not isinstance(state, dict):
            raise DataError(f"{path} does not hold a state dict")
        return state
    raise DataError(f"Inception weights must be a .safetensors file or the official {FID_WEIGHTS_FILE}, got {path}")


def load_inception(path: str | os.PathLike | None = None, *, download: bool = False) -> FIDInceptionV3:
    """The FID Inception-v3 in eval mode with weights from `path` (default: the cache), downloading only if asked."""
    if path is None:
        path = cache_dir() / FID_WEIGHTS_FILE
    path = Path(path).expanduser()
    if not path.is_file():
        if not download:
            raise DataError(f"Inception weights not found at {path}; pass the path of {FID_WEIGHTS_FILE} (or a "
                            f".safetensors conversion), or allow downloading it from {FID_WEIGHTS_URL}")
        download_weights(path)
    state = _read_state_dict(path)
    model = FIDInceptionV3()
    expected = model.state_dict()
    # BatchNorm's num_batches_tracked counter is unused in eval mode; files may or may not carry it.
    required = {k for k in expected if not k.endswith("num_batches_tracked")}
    missing = sorted(required - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise DataError(f"{path} does not match the FID Inception-v3: {len(missing)} missing keys "
                        f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}")
    wrong = [k for k in state if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise DataError(f"{path} does not match the FID Inception-v3: {len(wrong)} tensors have the wrong shape, "
                        f"e.g. {k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})")
    model.load_state_dict(state, strict=False)  # strict key check done above, with a one-line message
    return model.eval().requires_grad_(False)
