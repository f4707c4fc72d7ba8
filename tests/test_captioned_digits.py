"""Tests for diffusionlab.data.captioned_digits on the embedded 8x8 digits (no downloads, a few seconds)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from diffusionlab.data import load_dataset
from diffusionlab.data.captioned_digits import (
    CAPTION_VOCABULARY,
    DIGIT_WORDS,
    attribute_levels,
    caption_tokens,
    captioned_digits,
    compose_pairs,
    describe,
    measure_attributes,
    tercile_cuts,
)


@pytest.fixture(scope="module")
def digits():
    """The embedded sklearn digits, train split (1500 images, 1x8x8)."""
    return load_dataset("digits", split="train")


def upscale(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upscale so 8x8 strokes are more than one pixel wide."""
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def names_digit(text: str, label: int) -> bool:
    """Whether text names the digit as a word or a numeral."""
    words = caption_tokens(text)
    return DIGIT_WORDS[label] in words or str(label) in words


# ------------------------------------------------------------------------------------------------ attributes


def test_dilation_increases_thickness(digits):
    big = upscale(digits.images)
    dilated = torch.nn.functional.max_pool2d(big.float(), 3, stride=1, padding=1).to(torch.uint8)
    before = measure_attributes(big)["thickness"]
    after = measure_attributes(dilated)["thickness"]
    frac = float(np.mean(after > before))
    print(f"dilation increased thickness for {frac:.1%}")
    assert frac >= 0.9


def test_shear_right_increases_slant(digits):
    big = upscale(digits.images)
    n, c, h, w = big.shape
    canvas = torch.zeros((n, c, h, w + h), dtype=torch.uint8)  # room so no row is clipped by the shift
    canvas[..., h // 2:h // 2 + w] = big
    sheared = canvas.clone()
    for r in range(h):  # top rows move right, bottom rows left: shear of 0.5 px per row about the centre
        sheared[:, :, r] = torch.roll(canvas[:, :, r], shifts=round(0.5 * (h / 2 - r)), dims=-1)
    change = measure_attributes(sheared)["slant"] - measure_attributes(canvas)["slant"]
    frac = float(np.mean(change > 0))
    print(f"right shear gave positive slant change for {frac:.1%} (median change {np.median(change):.3f})")
    assert frac >= 0.9
    assert np.median(change) == pytest.approx(0.5, abs=0.1)  # the moment slant is the shear itself


def test_synthetic_bars():
    vertical = torch.zeros((1, 1, 16, 16), dtype=torch.uint8)
    vertical[..., 2:14, 7:9] = 255
    diagonal = torch.zeros((1, 1, 16, 16), dtype=torch.uint8)
    for r in range(2, 14):  # top at the right, bottom at the left: leans right
        diagonal[0, 0, r, 15 - r:17 - r] = 255
    a_vert, a_diag = measure_attributes(vertical), measure_attributes(diagonal)
    assert abs(a_vert["slant"][0]) < 1e-9
    assert a_diag["slant"][0] == pytest.approx(1.0, abs=0.05)
    assert a_vert["ink"][0] == pytest.approx(24.0)
    assert a_vert["height"][0] == pytest.approx(12 / 16, abs=0.01)  # sqrt(12) * std of 12 even rows / 16
    assert a_vert["thickness"][0] == pytest.approx(24 / 14)  # area 24, outline 28 edges -> 24 / (28 / 2)


def test_empty_image_is_zero():
    a = measure_attributes(torch.zeros((2, 3, 8, 8), dtype=torch.uint8))
    for values in a.values():
        assert np.all(values == 0)


# ------------------------------------------------------------------------------------------------ captions


def test_captions_deterministic_and_seeded(digits):
    first = describe(digits.images, digits.labels, seed=0)
    assert first == describe(digits.images, digits.labels, seed=0)
    other = describe(digits.images, digits.labels, seed=1)
    assert len(first) == len(digits)
    assert sum(a != b for a, b in zip(first, other)) > len(digits) // 2


def test_captions_name_digit_and_use_vocabulary(digits):
    dataset, captions = captioned_digits(digits, seed=3)
    assert len(captions) == len(digits)
    assert torch.equal(dataset.images, digits.images) and torch.equal(dataset.labels, digits.labels)
    if hasattr(dataset, "captions"):
        assert list(dataset.captions) == captions
    for caption, label in zip(captions, digits.labels.tolist()):
        assert names_digit(caption, label), caption
        assert set(caption_tokens(caption)) <= CAPTION_VOCABULARY, caption
    assert len(set(captions)) > 50  # several phrasings, not one template


def test_terciles_split_each_class(digits):
    labels = digits.labels.numpy()
    attrs = measure_attributes(digits.images)
    levels = attribute_levels(attrs, labels, tercile_cuts(attrs, labels))
    for c in range(10):
        for name in ("thickness", "slant"):
            for level in (0, 2):
                frac = float(np.mean(levels[name][labels == c] == level))
                assert 0.2 <= frac <= 0.45, (c, name, level, frac)


def test_caption_words_follow_levels(digits):
    labels = digits.labels.numpy()
    attrs = measure_attributes(digits.images)
    levels = attribute_levels(attrs, labels, tercile_cuts(attrs, labels))
    for i, caption in enumerate(describe(digits.images, digits.labels, seed=0)):
        words = set(caption_tokens(caption))
        assert bool(words & {"thin", "light", "fine"}) == (levels["thickness"][i] == 0), caption
        assert bool(words & {"thick", "bold"}) == (levels["thickness"][i] == 2), caption
        assert ("left" in words) == (levels["slant"][i] == 0), caption
        assert ("right" in words) == (levels["slant"][i] == 2), caption


# ------------------------------------------------------------------------------------------------ pairs


def clause_for(caption: str, side: str) -> str:
    """The clause of a pair caption that mentions 'on the <side>'."""
    clauses = [c for c in re.split(r", | and ", caption) if f"on the {side}" in c]
    assert len(clauses) == 1, caption
    return clauses[0]


def test_compose_pairs(digits):
    canvases, captions, pair_labels = compose_pairs(digits, 200, seed=5)
    h, w = digits.height, digits.width
    assert canvases.images.shape == (200, 1, h, 2 * w) and canvases.images.dtype == torch.uint8
    assert pair_labels.shape == (200, 2)
    assert torch.equal(canvases.labels, torch.from_numpy(pair_labels[:, 0]))
    assert canvases.num_classes == 10
    sources = digits.images.reshape(len(digits), -1)
    for k in range(200):
        left, right = canvases.images[k, ..., :w], canvases.images[k, ..., w:]
        # Each half is exactly some source digit with the recorded label.
        for half, label in ((left, pair_labels[k, 0]), (right, pair_labels[k, 1])):
            match = (sources == half.reshape(1, -1)).all(dim=1)
            assert match.any() and label in digits.labels[match].tolist()
        assert names_digit(clause_for(captions[k], "left"), int(pair_labels[k, 0])), captions[k]
        assert names_digit(clause_for(captions[k], "right"), int(pair_labels[k, 1])), captions[k]
        assert set(caption_tokens(captions[k])) <= CAPTION_VOCABULARY, captions[k]
    again = compose_pairs(digits, 200, seed=5)
    assert torch.equal(again[0].images, canvases.images) and again[1] == captions
    assert np.array_equal(again[2], pair_labels)
    other = compose_pairs(digits, 200, seed=6)
    assert not torch.equal(other[0].images, canvases.images) and other[1] != captions


def test_captioned_sources_load_by_name_and_train_through_the_cli(tmp_path):
    from diffusionlab.data import load_dataset
    from diffusionlab.data.captioned_digits import compose_pairs
    from helpers import run_cli

    text = load_dataset("digits-text", split="test")
    base = load_dataset("digits", split="test")
    assert text.name == "digits-text:test" and len(text) == len(base) and torch.equal(text.images, base.images)
    assert len(text.captions) == len(text) and text.captions == load_dataset("digits-text", split="test").captions
    pairs = load_dataset("digits-pairs", split="test")
    assert pairs.shape == (1, 8, 16) and len(pairs) == len(base) and len(pairs.captions) == len(pairs)
    again, captions, labels = compose_pairs(base, len(base), seed=1)  # the test split's documented seed
    assert torch.equal(again.images, pairs.images) and captions == pairs.captions
    assert not torch.equal(load_dataset("digits-pairs", split="train").images[:10], pairs.images[:10])
    proc = run_cli("train", "--dataset", "digits-pairs", "--steps", "2", "--base-channels", "8", "--channel-mult", "1",
                   "--attention-resolutions", "", "--grid-n", "4", "--grid-steps", "2", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr  # 8x16 canvases train (captions are carried, not yet conditioned on)
