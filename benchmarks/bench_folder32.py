"""The `folder32` preset (issue 19): a network for a user's own folder of 32x32 RGB images, chosen by measurement.

    python benchmarks/bench_folder32.py make --root ROOT                  # the image folder (real photographs)
    python benchmarks/bench_folder32.py speed --root ROOT [--minutes 1] [--write]
    python benchmarks/bench_folder32.py quality --root ROOT --rows A B [--minutes 5] [--write]

No 32x32 RGB data set ships offline, so the folder is made from the two real photographs that scikit-learn ships
(`load_sample_images`: a temple in China and a flower, 427x640): 1,000 random square crops of each, 48 to 160
pixels wide, downsampled to 32x32 (Lanczos) and saved as PNG in one subfolder per photograph.

`speed` trains every row for --minutes (alone, one after the other) and reads its median it/s from metrics.jsonl;
`quality` trains the chosen rows for --minutes each and scores the variational bound in bits/dim (`evaluate --nll`
on a 100-step respaced chain, 256 images of the folder) and a sample grid. Rows are `train --data-dir ROOT/photos`
plus flags (ROWS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cli, machine, publish, train_each  # noqa: E402

SPEED_HEADING = "## The folder32 preset: speed (issue 19)"
QUALITY_HEADING = "## The folder32 preset: quality at an equal budget (issue 19)"
ROWS: dict[str, tuple[list[str], str]] = {
    "digits-preset": (["--preset", "digits", "--dataset", "folder"], "the default preset (digits) on the folder"),
    # measured when folder32 had three levels (1, 2, 2); it now has the 4th level of folder32-4lvl
    "folder32": (["--preset", "folder32", "--channel-mult", "1,2,2"], "32 channels x (1, 2, 2), attention at 8, batch 64"),
    "folder32-64ch": (["--preset", "folder32", "--channel-mult", "1,2,2", "--base-channels", "64"],
                      "the row above with 64 base channels"),
    "folder32-4lvl": (["--preset", "folder32", "--channel-mult", "1,2,2,2"], "a 4th level (4x4): folder32 now"),
    "folder32-2blk": (["--preset", "folder32", "--channel-mult", "1,2,2", "--num-res-blocks", "2"],
                      "(1, 2, 2) with 2 blocks per level"),
    "folder32-b32": (["--preset", "folder32", "--channel-mult", "1,2,2", "--batch-size", "32"], "(1, 2, 2) at batch 32"),
}
CROPS_PER_PHOTO = 1000


def make(args: argparse.Namespace) -> None:
    """Write ROOT/photos/{china,flower}/NNNN.png: random crops of scikit-learn's two photographs at 32x32."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    rng = np.random.default_rng(0)
    for name, img in zip(("china", "flower"), photos.images):
        out = Path(args.root) / "photos" / name
        out.mkdir(parents=True, exist_ok=True)
        h, w, _ = img.shape
        for i in range(CROPS_PER_PHOTO):
            side = int(rng.integers(48, 161))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(img[y : y + side, x : x + side]).resize((32, 32), Image.LANCZOS)
            crop.save(out / f"{i:04d}.png")
    print(f"{2 * CROPS_PER_PHOTO} crops in {Path(args.root) / 'photos'}")


def _flags(root: Path):
    return lambda name: [*ROWS[name][0], "--data-dir", str(root / "photos"), "--log-every", "5"]


def _median_its(run: Path) -> tuple[float, int]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return statistics.median(r["it_per_s"] for r in rows[1:]), rows[-1]["step"]


def _params(run: Path) -> float:
    """Millions of parameters in the run's newest checkpoint (the network's weights)."""
    from safetensors.torch import load_file

    from diffusionlab.training.checkpoint import latest_checkpoint

    return sum(t.numel() for t in load_file(str(latest_checkpoint(run) / "model.safetensors")).values()) / 1e6


def speed(args: argparse.Namespace) -> None:
    """Each row for --minutes; the median it/s and img/s."""
    root = Path(args.root) / "speed"
    train_each(root, args.rows, _flags(Path(args.root)), args.minutes)
    lines = ["| row | what | parameters (M) | batch | it/s | img/s | steps in 20 min |",
             "|---|---|---|---|---|---|---|"]
    for name in args.rows:
        run = root / name
        its, _ = _median_its(run)
        batch = json.loads((run / "config.json").read_text())["train"]["batch_size"]
        lines.append(f"| {name} | {ROWS[name][1]} | {_params(run):.2f} | {batch} | {its:.2f} | {its * batch:.0f} | "
                     f"{its * 1200:,.0f} |")
    publish(SPEED_HEADING, _body(f"`python benchmarks/bench_folder32.py speed --root ROOT --minutes {args.minutes:g}` "
                                 "(each row trained alone for that long; median it/s over its log lines; default "
                                 "precision and threads)", lines), args.write)


def quality(args: argparse.Namespace) -> None:
    """The chosen rows for --minutes each: bits/dim (the variational bound) and a grid."""
    root = Path(args.root) / "quality"
    # Equal time at each row's speed as measured by `speed` (alone on the machine): --minutes x its it/s in steps,
    # so the comparison holds even while other work shares the CPU.
    speed_of = {name: _median_its(Path(args.root) / "speed" / name)[0] for name in args.rows}
    train_each(root, args.rows, _flags(Path(args.root)), args.minutes,
               steps=lambda name: round(args.minutes * 60 * speed_of[name]))
    lines = ["| row | steps (5 min at the speed table's it/s) | bits/dim (bound, 100-step chain, 256 images, EMA) | "
             "samples |",
             "|---|---|---|---|"]
    for name in args.rows:
        run = root / name
        _, steps = _median_its(run)
        out = run / "eval" / "nll.json"
        if not out.exists():
            cli("evaluate", str(run), "--nll", "--split", "all", "--nll-n", "256", "--nll-steps", "100",
                "--json", str(out))
        bpd = json.loads(out.read_text())["nll"]["bits_per_dim"]
        grid = run / "samples" / "final-grid.npz"
        if not grid.exists():
            cli("sample", str(run), "--n", "36", "--sampler", "dpmpp2m", "--steps", "20", "--out", str(grid))
        lines.append(f"| {name} | {steps} | {bpd:.3f} | `{grid.with_suffix('.png').name}` |")
    publish(QUALITY_HEADING, _body(f"`python benchmarks/bench_folder32.py quality --root ROOT --rows "
                                   f"{' '.join(args.rows)} --minutes {args.minutes:g}` (each row trained for --minutes at its speed in the "
                                   "table above, as a step budget); bits/dim: `evaluate --nll "
                                   "--split all --nll-n 256 --nll-steps 100` (the folder has no test split; with "
                                   "2,000 images a few minutes cannot memorise them)", lines), args.write)


def _body(command: str, lines: list[str]) -> str:
    """A section: the machine, the command, the table."""
    return "\n".join([f"- Machine: {machine()}", f"- Command: {command}", "", *lines])


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("make", "speed", "quality"):
        s = sub.add_parser(name)
        s.add_argument("--root", required=True)
        if name != "make":
            s.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
            s.add_argument("--minutes", type=float, default=1.0 if name == "speed" else 5.0)
            s.add_argument("--write", action="store_true")
    args = p.parse_args()
    {"make": make, "speed": speed, "quality": quality}[args.cmd](args)


if __name__ == "__main__":
    main()
