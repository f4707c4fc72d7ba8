"""Feature extractors: the FID Inception-v3 (architecture, safe loading) and the cached domain CNN."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusionlab.data import load_dataset
from diffusionlab.data.dataset import ImageDataset
from diffusionlab.errors import DataError
from diffusionlab.evaluation import extractors, inception
from diffusionlab.evaluation.extractors import domain_extractor, reference_features, train_domain_cnn
from diffusionlab.evaluation.inception import FIDInceptionV3, download_weights, load_inception, preprocess
from diffusionlab.evaluation.quality import quality_report, real_floor

# ------------------------------------------------------------------------------------ Inception-v3 key layout
# Written out from pytorch-fid's fid_inception_v3() (torchvision's Inception3 with num_classes=1008,
# aux_logits=False, and its Mixed_5b..5d / 6b..6e / 7b, 7c replaced by the FID blocks, which keep the
# parameter names): every BasicConv2d contributes conv.weight and bn.{weight,bias,running_mean,running_var}.
_A = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool"]
_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_C = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
      "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"]
_D = ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"]
_E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
      "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
_CONVS = (["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
          + [f"{m}.{b}" for m in ("Mixed_5b", "Mixed_5c", "Mixed_5d") for b in _A]
          + [f"Mixed_6a.{b}" for b in _B]
          + [f"{m}.{b}" for m in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e") for b in _C]
          + [f"Mixed_7a.{b}" for b in _D]
          + [f"{m}.{b}" for m in ("Mixed_7b", "Mixed_7c") for b in _E])
REFERENCE_KEYS = {f"{c}.{p}" for c in _CONVS
                  for p in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")}
REFERENCE_KEYS |= {"fc.weight", "fc.bias"}
REFERENCE_SHAPES = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
                    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
                    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
                    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1), "fc.weight": (1008, 2048), "fc.bias": (1008,)}
REFERENCE_PARAMETERS = 23_850_960  # torchvision's 23,834,568 without aux head + 8 extra classes x 2049


@pytest.fixture(scope="module")
def inception_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return FIDInceptionV3().state_dict()


def test_inception_keys_match_pytorch_fid_layout(inception_state: dict[str, torch.Tensor]) -> None:
    assert len(_CONVS) == 94 and len(REFERENCE_KEYS) == 472
    keys = {k for k in inception_state if not k.endswith("num_batches_tracked")}
    assert keys == REFERENCE_KEYS
    for k, shape in REFERENCE_SHAPES.items():
        assert tuple(inception_state[k].shape) == shape, k
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == REFERENCE_PARAMETERS


def test_inception_outputs_pool3_and_1008_logits(inception_state: dict[str, torch.Tensor]) -> None:
    model = FIDInceptionV3().eval()
    model.load_state_dict(inception_state)
    images = torch.stack([torch.zeros(1, 8, 8, dtype=torch.uint8), torch.full((1, 8, 8), 255, dtype=torch.uint8)])
    x = preprocess(images)
    assert x.shape == (2, 3, 299, 299)
    assert torch.allclose(x[0], torch.tensor(-1.0)) and torch.allclose(x[1], torch.tensor(1.0))  # [0,255] -> [-1,1]
    with torch.no_grad():
        pool, logits = model(x)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(pool).all() and torch.isfinite(logits).all()
    assert not torch.equal(pool[0], pool[1])  # black and white images give different features


def test_inception_safetensors_round_trip(tmp_path: Path, inception_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in inception_state.items() if not k.endswith("num_batches_tracked")}, path)
    model = load_inception(path)
    assert not model.training
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, inception_state[k]), k


def test_inception_mismatched_keys_are_refused(tmp_path: Path, inception_state: dict[str, torch.Tensor]) -> None:
    state = {k: v.contiguous() for k, v in inception_state.items()}
    del state["Mixed_6c.branch7x7_2.conv.weight"]
    state["extra.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match="1 missing keys.*1 unexpected") as e:
        load_inception(tmp_path / "bad.safetensors")
    assert "\n" not in str(e.value)
    state = {k: v.contiguous() for k, v in inception_state.items()}
    state["fc.weight"] = torch.zeros(1000, 2048)
    save_file(state, tmp_path / "shape.safetensors")
    with pytest.raises(DataError, match="wrong shape"):
        load_inception(tmp_path / "shape.safetensors")


class _Payload:
    """Unpickling this object creates a directory: proof that a file was (or was not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_inception_pth_with_wrong_hash_is_not_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "unpickled"
    evil = tmp_path / "pt_inception-2015-12-05-6726825d.pth"  # the right NAME does not help: the bytes are hashed
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(DataError, match="refusing to read a .pth") as e:
        load_inception(evil)
    assert "\n" not in str(e.value)
    assert not marker.exists() and calls == []


def test_inception_official_pth_is_read_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     inception_state: dict[str, torch.Tensor]) -> None:
    # We cannot ship the real file; pretend the official hash is this file's, and check the read path.
    path = tmp_path / "weights.pth"
    torch.save(inception_state, path)
    monkeypatch.setattr(inception, "FID_WEIGHTS_SHA256_PREFIX", inception.sha256_file(path)[:8])
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = load_inception(path)
    assert seen.get("weights_only") is True
    assert torch.equal(model.state_dict()["fc.weight"], inception_state["fc.weight"])


def test_inception_missing_weights_and_offline_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_inception(tmp_path / "absent.pth")  # nothing is downloaded unless asked
    assert not (tmp_path / "absent.pth").exists()
    with pytest.raises(DataError, match="could not download"):
        download_weights(tmp_path / "w.pth", url="http://127.0.0.1:9/none.pth", timeout=5)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left behind
    with pytest.raises(DataError, match=".safetensors file or the official"):
        (tmp_path / "w.bin").write_bytes(b"x")
        load_inception(tmp_path / "w.bin")


# ------------------------------------------------------------------------------------ domain extractor

FAST = {"epochs": 2}  # 2 x 12 steps on the digits: enough to test determinism and caching, not accuracy


@pytest.fixture(scope="module")
def digits() -> tuple[ImageDataset, ImageDataset]:
    return load_dataset("digits", None, "train", None, None), load_dataset("digits", None, "test", None, None)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory) -> tuple[extractors.DomainExtractor, Path, float]:
    cache = tmp_path_factory.mktemp("cache")
    t0 = time.perf_counter()
    ex = domain_extractor(digits[0], digits[1], cache_dir=cache, min_steps=150)
    return ex, cache, time.perf_counter() - t0


def test_domain_extractor_accuracy_on_digits(trained, digits) -> None:
    ex, _, seconds = trained
    print(f"\n{ex.name}: trained in {seconds:.1f} s")
    assert ex.test_accuracy is not None and ex.test_accuracy >= 0.95  # 150 steps reach ~99% on the 297 test digits
    assert ex.name.startswith("domain-cnn:digits@") and "test acc" in ex.name
    feats, logits = ex(digits[1].images[:5])
    assert feats.shape == (5, 128) and feats.dtype == np.float64 and logits.shape == (5, 10)


def test_domain_extractor_cache_hit_does_not_train(trained, digits, monkeypatch: pytest.MonkeyPatch) -> None:
    ex, cache, _ = trained

    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(extractors, "train_domain_cnn", boom)
    again = domain_extractor(digits[0], digits[1], cache_dir=cache, min_steps=150)
    assert again.name == ex.name
    np.testing.assert_array_equal(again(digits[1].images)[0], ex(digits[1].images)[0])
    files = sorted(p.name for p in (cache / "domain-extractors").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")


def test_domain_training_is_deterministic(digits) -> None:
    settings = {**extractors.DEFAULT_SETTINGS, **FAST}
    a = train_domain_cnn(digits[0], settings)
    b = train_domain_cnn(digits[0], settings)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    c = train_domain_cnn(digits[0], {**settings, "seed": 1})
    assert not torch.equal(a.head.weight, c.head.weight)


def test_domain_cache_invalidated_by_one_pixel(digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_train = extractors.train_domain_cnn
    monkeypatch.setattr(extractors, "train_domain_cnn", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    train = digits[0]
    first = domain_extractor(train, None, cache_dir=tmp_path, **FAST)
    domain_extractor(train, None, cache_dir=tmp_path, **FAST)
    assert len(calls) == 1
    images = train.images.clone()
    images[0, 0, 4, 4] ^= 1  # one pixel, one bit
    changed = ImageDataset(images, train.labels, train.num_classes, train.name)
    second = domain_extractor(changed, None, cache_dir=tmp_path, **FAST)
    assert len(calls) == 2 and second.cache_key != first.cache_key
    domain_extractor(train, None, cache_dir=tmp_path, **{**FAST, "seed": 1})  # settings are part of the key too
    assert len(calls) == 3


def test_domain_extractor_needs_labels(digits, tmp_path: Path) -> None:
    unlabelled = ImageDataset(digits[0].images, None, None, "unlabelled")
    with pytest.raises(DataError, match="no labels.*Inception") as e:
        domain_extractor(unlabelled, cache_dir=tmp_path)
    assert "\n" not in str(e.value)


def test_domain_extractor_handles_sizes_and_channels() -> None:
    for c, s in ((1, 8), (3, 16), (1, 28), (3, 32)):
        model = extractors.DomainCNN(c, 10)
        feats, logits = model(torch.zeros(2, c, s, s))
        assert feats.shape == (2, 128) and logits.shape == (2, 10)


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIFFUSIONLAB_CACHE", str(tmp_path))
    assert extractors.cache_dir() == tmp_path
    monkeypatch.delenv("DIFFUSIONLAB_CACHE")
    assert extractors.cache_dir() == Path.home() / ".cache" / "diffusionlab"


# ------------------------------------------------------------------------------------ the instrument on real data

def test_fid_separates_real_digits_from_noise(trained, digits) -> None:
    ex, cache, _ = trained
    train, test = digits
    n = len(test)
    ref = reference_features(ex, test, n, seed=0, cache_dir=cache)
    real_fake = train.images[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]]
    noise = torch.randint(0, 256, real_fake.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    real = quality_report(ex, real_fake, ref, kid_subsets=10)
    fake = quality_report(ex, noise, ref, kid_subsets=10)
    assert real["extractor"] == ex.name and real["n_fake"] == n and real["n_real"] == n
    assert real["fid"] * 20 < fake["fid"]
    assert real["kid_mean"] < fake["kid_mean"]
    print(f"\nreal: {real}\nnoise: {fake}")
    assert real["precision"] > 0.8 and real["recall"] > 0.8
    assert fake["precision"] < real["precision"] / 2 and fake["recall"] < 0.1
    assert real["inception_score"][0] > 5 > fake["inception_score"][0]


def test_reference_features_cached_and_real_floor(trained, digits, monkeypatch: pytest.MonkeyPatch) -> None:
    ex, cache, _ = trained
    train, test = digits
    a = reference_features(ex, test, 100, seed=3, cache_dir=cache)
    monkeypatch.setattr(ex, "model", None)  # a cache hit must not run the network
    b = reference_features(ex, test, 100, seed=3, cache_dir=cache)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    monkeypatch.undo()
    floor = real_floor(ex, train, test, 250, seed=0, cache_dir=cache, kid_subsets=10)
    assert floor["extractor"] == ex.name and floor["n_fake"] == floor["n_real"] == 250
    assert 0 < floor["fid"] < 50 and floor["precision"] > 0.8 and floor["recall"] > 0.8
    with pytest.raises(DataError):
        reference_features(ex, test, len(test) + 1, cache_dir=cache)
