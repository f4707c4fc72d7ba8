"""Pictures people look at: sample grids, denoising animations, loss curves; and the samples file beside them.
Every file is written atomically (atomic.py)."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .atomic import atomic_write_bytes, temp_name


class SampleWriter:
    """A samples .npz written batch by batch: key `images`, uint8, (N, H, W) for one channel, else (N, H, W, C).

    The array streams into a deflated zip member (the layout np.savez_compressed writes, so np.load reads it) in a
    temporary file that is fsync'ed and renamed into place by `close`, so a large N never sits in memory and a killed
    command leaves no half file. The first 256 images are kept for the PNG grid written beside it.
    """

    GRID = 256

    def __init__(self, out: str | os.PathLike, n: int, image_shape: tuple[int, int, int]):
        self.out, self.n, self.written = Path(out), n, 0
        c, h, w = image_shape
        self.shape = (n, h, w) if c == 1 else (n, h, w, c)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_name(self.out)
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo("images.npy", date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same images, same bytes
        info.compress_type = zipfile.ZIP_DEFLATED
        self.member = self.zip.open(info, "w", force_zip64=True)
        np.lib.format.write_array_header_2_0(self.member, {"descr": "|u1", "fortran_order": False,
                                                           "shape": self.shape})
        self.first: list[Tensor] = []

    def write(self, images: Tensor) -> None:
        """Append a batch of uint8 images (B, C, H, W)."""
        if self.written + len(images) > self.n:
            raise ValueError(f"more than the {self.n} images announced")
        arr = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
        self.member.write(np.ascontiguousarray(arr.numpy()).tobytes())
        kept = sum(len(x) for x in self.first)
        if kept < self.GRID:
            self.first.append(images[: self.GRID - kept].clone())
        self.written += len(images)

    def close(self, grid_images: Tensor | None = None, nrow: int | None = None,
              arrays: dict[str, np.ndarray] | None = None) -> Path:
        """Finish the .npz (atomically), with `arrays` as further keys (e.g. `labels`), and write the grid of the first
        256 (or of `grid_images`); the grid's path."""
        if self.written != self.n:
            self.abort()
            raise ValueError(f"{self.written} images written of the {self.n} announced")
        self.member.close()
        for key, value in (arrays or {}).items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with self.zip.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)
        self.zip.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.out)
        shown = torch.cat(self.first) if grid_images is None else grid_images[: self.GRID]
        return save_grid(shown, self.out.with_suffix(".png"), nrow=nrow)

    def abort(self) -> None:
        """Drop the partial file (an error mid-way): nothing is left behind."""
        try:
            self.member.close()
            self.zip.close()
        except (OSError, ValueError):
            pass
        self.tmp.unlink(missing_ok=True)


def write_samples(images: Tensor, out: str | os.PathLike, grid_images: Tensor | None = None,
                  nrow: int | None = None) -> Path:
    """Write uint8 images (N, C, H, W) to `out` (.npz with key `images`: (N, H, W) for one channel, else (N, H, W, C))
    and a PNG grid of the first 256 (or of `grid_images`) beside it; returns the grid's path."""
    writer = SampleWriter(out, len(images), tuple(images.shape[1:]))
    try:
        writer.write(images)
    except BaseException:
        writer.abort()
        raise
    return writer.close(grid_images, nrow)


def grid_array(images: Tensor, nrow: int | None = None, padding: int = 1, min_tile: int = 32) -> np.ndarray:
    """Tile uint8 images (N, C, H, W) into one (H', W', C) array, upscaled (nearest) so tiles are >= min_tile px."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("grid_array expects uint8 images of shape (N, C, H, W)")
    n, c, h, w = images.shape
    scale = max(1, math.ceil(min_tile / max(h, w)))
    if scale > 1:
        images = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        h, w = h * scale, w * scale
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), 64, dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + col * (w + padding)
        out[y0 : y0 + h, x0 : x0 + w] = arr[i]
    return out


def _to_pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def png_bytes(images: Tensor, nrow: int | None = None, padding: int = 1, min_tile: int = 32) -> bytes:
    """uint8 images (N, C, H, W) as the bytes of one PNG grid (`grid_array`'s tiling)."""
    buf = io.BytesIO()
    _to_pil(grid_array(images, nrow, padding, min_tile)).save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Write uint8 images (N, C, H, W) as one PNG grid."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(images, nrow))
    return path


def save_trajectory_gif(
    frames_xt: Sequence[Tensor], frames_x0: Sequence[Tensor], labels: Sequence[str], path: str | os.PathLike, fps: int = 12
) -> Path:
    """Animate denoising: each frame shows the grid of x_t (left) and of the x0 prediction (right), titled by its label."""
    path = Path(path)
    pil_frames = []
    for xt, x0, label in zip(frames_xt, frames_x0, labels):
        left, right = grid_array(xt), grid_array(x0)
        h, w, c = left.shape
        canvas = np.full((h + 14, 2 * w + 6, c), 255, dtype=np.uint8)
        canvas[14:, :w], canvas[14:, w + 6 :] = left, right
        img = _to_pil(canvas).convert("RGB")
        draw = ImageDraw.Draw(img)
        draw.text((2, 1), f"x_t  ({label})", fill=(0, 0, 0))
        draw.text((w + 8, 1), "x0 prediction", fill=(0, 0, 0))
        pil_frames.append(img)
    pil_frames += [pil_frames[-1]] * fps  # hold the final samples for a second
    buf = io.BytesIO()
    pil_frames[0].save(buf, format="GIF", save_all=True, append_images=pil_frames[1:], duration=int(1000 / fps), loop=0)
    atomic_write_bytes(path, buf.getvalue())
    return path


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the Agg backend (files only: no display, no GUI toolkit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 100) -> bytes:  # type: ignore[no-untyped-def]
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=dpi, format="png")
    finally:
        pyplot().close(fig)
    return buf.getvalue()


# metrics.jsonl columns that are bookkeeping, not a loss term (training/loop.py writes them on every row)
BOOKKEEPING = ("step", "lr", "it_per_s", "images_seen", "elapsed_s", "skipped_steps")


def metrics_png(rows: Sequence[dict], detail: bool = False) -> bytes | None:
    """The training loss (raw and smoothed) and learning rate of metrics.jsonl rows as PNG bytes (None without a
    loss); `detail` adds the other logged terms (a GAN's d_loss, an autoencoder's kl) and the speed in it/s."""
    plt = pyplot()
    rows = [r for r in rows if "loss" in r and "step" in r]
    if not rows:
        return None
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows], dtype=float)
    terms = sorted({k for r in rows for k, v in r.items() if k not in (*BOOKKEEPING, "loss")
                    and isinstance(v, (int, float))}) if detail else []
    speed = detail and any("it_per_s" in r for r in rows)
    panels = 2 + bool(terms) + speed
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.2))
    ax = list(np.atleast_1d(axes))
    ax[0].plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 5:
        k = max(2, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax[0].plot(steps[k - 1 :], smooth, lw=1.5, label=f"mean of {k}")
    if bool((loss > 0).all()):  # a log axis shows a loss falling over decades; a GAN's may cross 0
        ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].set_title("training loss")
    ax[0].legend()
    ax[1].plot(steps, [r.get("lr", np.nan) for r in rows])
    ax[1].set_xlabel("step")
    ax[1].set_title("learning rate")
    if terms:
        values = np.array([[r.get(name, np.nan) for r in rows] for name in terms], dtype=float)
        for name, series in zip(terms, values):
            ax[2].plot(steps, series, lw=1, label=name)
        if bool((values[np.isfinite(values)] > 0).all()):  # terms of different sizes (a KL and an L1) on one axis
            ax[2].set_yscale("log")
        ax[2].set_xlabel("step")
        ax[2].set_title("other logged terms")
        ax[2].legend(fontsize=7)
    if speed:
        ax[-1].plot(steps, [r.get("it_per_s", np.nan) for r in rows])
        ax[-1].set_xlabel("step")
        ax[-1].set_title("speed (it/s)")
    fig.tight_layout()
    return figure_png(fig)


def plot_metrics(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """Plot the training loss (raw and smoothed) and learning rate from metrics.jsonl into a PNG."""
    if not Path(metrics_path).is_file():
        return None
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    png = metrics_png(rows)
    if png is None:
        return None
    out_path = Path(out_path)
    atomic_write_bytes(out_path, png)
    return out_path
