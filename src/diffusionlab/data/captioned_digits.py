"""Offline text captions for real digit images (issue 15, text-to-image), measured from the pixels.

Every attribute word in a caption comes from a measurement of that image (ink, stroke thickness, slant,
height), so a text-conditioned model can be scored on whether it follows the words. Words are decided
relative to the image's own class (a 1 has less ink than an 8) with tercile cut points computed on the
dataset. compose_pairs builds two-digit canvases whose captions bind words to positions (left / right).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from diffusionlab.data.dataset import ImageDataset
from diffusionlab.errors import DataError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUMERALS = tuple(str(d) for d in range(10))

# Synonyms per attribute level (index 0 = low tercile, 1 = middle, 2 = high); "" means "say nothing".
THICKNESS_WORDS = (("thin", "light", "fine"), ("",), ("thick", "bold"))
SLANT_WORDS = (("slanted left", "leaning left"), ("upright",), ("slanted right", "leaning right"))
SIZE_WORDS = (("small",), ("",), ("large",))

# Glue words of the templates below (single-digit and pair captions).
_TEMPLATE_WORDS = ("a", "an", "the", "digit", "written", "and", "handwritten", "on", "left", "right")

ATTRIBUTES = ("thickness", "slant", "height")


def _words(*groups: tuple[tuple[str, ...], ...]) -> set[str]:
    """All whitespace-separated words in nested synonym tables."""
    return {w for group in groups for level in group for phrase in level for w in phrase.split()}


# Every word a caption can contain (tokens = caption.replace(",", " ").split()); tested on generated captions.
CAPTION_VOCABULARY: frozenset[str] = frozenset(
    _words(THICKNESS_WORDS, SLANT_WORDS, SIZE_WORDS) | set(DIGIT_WORDS) | set(NUMERALS) | set(_TEMPLATE_WORDS))


def caption_tokens(caption: str) -> list[str]:
    """Split a caption into the words CAPTION_VOCABULARY documents (commas are separators)."""
    return caption.replace(",", " ").split()


# ------------------------------------------------------------------------------------------------ measurement


def measure_attributes(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Measure ink, thickness, slant and height of each uint8 (N, C, H, W) image from its pixels."""
    x = images.to(torch.float64).mean(dim=1).numpy() / 255.0  # (N, H, W); channels averaged to grey ink
    n, h, w = x.shape
    ink = x.sum(axis=(1, 2))
    # "On" pixels: above half of the image's own max, so faint anti-aliasing does not count as stroke.
    peak = x.max(axis=(1, 2), keepdims=True)
    on = (x > 0.5 * peak) & (peak > 0)
    # Boundary length = number of on/off 4-neighbour edges (zero-padded); a stroke of width t and length L has
    # area ~ t*L and boundary ~ 2*L, so ink / (boundary / 2) ~ t. Dilation adds area and fills holes while the
    # outline length stays ~ the same, so this grows with dilation (tested).
    padded = np.pad(on, ((0, 0), (1, 1), (1, 1)))
    boundary = (np.diff(padded, axis=1) != 0).sum(axis=(1, 2)) + (np.diff(padded, axis=2) != 0).sum(axis=(1, 2))
    thickness = np.where(boundary > 0, ink / np.maximum(boundary / 2.0, 1e-12), 0.0)
    # Slant from second central moments with y = row index (pointing down): x ~ xc - slant * (y - yc), so the
    # least-squares shear is -mu11 / mu02 and positive means the top leans right (exact under a shear, tested).
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    safe_ink = np.maximum(ink, 1e-12)
    yc = np.einsum("nhw,h->n", x, ys) / safe_ink
    xc = np.einsum("nhw,w->n", x, xs) / safe_ink
    dy = ys[None, :, None] - yc[:, None, None]
    dx = xs[None, None, :] - xc[:, None, None]
    mu11 = (x * dx * dy).sum(axis=(1, 2))
    mu02 = (x * dy * dy).sum(axis=(1, 2))
    slant = np.where(mu02 > 1e-12, -mu11 / np.maximum(mu02, 1e-12), 0.0)
    # Height: the vertical spread of the ink, sqrt(12) * std(y) / H -- the extent of ink spread evenly over its
    # rows, as a fraction of the image height. A bounding box would be too coarse: the 8x8 digits fill their box
    # (1496 of 1500 have box height 1) and most MNIST digits are 20 rows high, so no tercile could separate them.
    height = np.where(ink > 1e-12, np.sqrt(12.0 * mu02 / safe_ink) / h, 0.0)
    return {"ink": ink, "thickness": thickness, "slant": slant, "height": height.astype(np.float64)}


def tercile_cuts(attrs: dict[str, np.ndarray], labels: np.ndarray, num_classes: int = 10) -> dict[str, np.ndarray]:
    """Per-class 1/3 and 2/3 quantiles of each attribute: {name: (num_classes, 2)} (NaN for absent classes)."""
    cuts = {}
    for name in ATTRIBUTES:
        table = np.full((num_classes, 2), np.nan)
        for c in range(num_classes):
            values = attrs[name][labels == c]
            if values.size:
                table[c] = np.quantile(values, [1 / 3, 2 / 3])
        cuts[name] = table
    return cuts


def attribute_levels(attrs: dict[str, np.ndarray], labels: np.ndarray,
                     cuts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Level 0 (below the class's lower tercile), 1 (middle) or 2 (above the upper tercile) per attribute."""
    # Strict comparisons: ties at a cut point (coarse 8x8 heights) stay in the unmarked middle level.
    levels = {}
    for name in ATTRIBUTES:
        lo, hi = cuts[name][labels, 0], cuts[name][labels, 1]
        v = attrs[name]
        levels[name] = np.where(v < lo, 0, np.where(v > hi, 2, 1)).astype(np.int64)
    return levels


# ------------------------------------------------------------------------------------------------ phrasing


def _article(word: str) -> str:
    """'a' or 'an' by the sound of the next word ('an eight', 'an 8', 'an upright')."""
    return "an" if word[0] in "aeiou8" else "a"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """One option chosen by rng."""
    return options[int(rng.integers(len(options)))]


def _parts(label: int, levels: tuple[int, int, int], rng: np.random.Generator) -> tuple[str, list[str], str]:
    """The digit noun, its pre-noun adjectives and its post-noun slant phrase for one image."""
    thick, slant, size = levels
    noun = DIGIT_WORDS[label] if rng.integers(2) else NUMERALS[label]
    slant_phrase = _pick(rng, SLANT_WORDS[slant])
    pre = [w for w in (_pick(rng, SIZE_WORDS[size]), _pick(rng, THICKNESS_WORDS[thick])) if w]
    if slant == 1:  # "upright" reads as an adjective ("a small upright 3"); directions follow the noun
        return noun, pre + [slant_phrase], ""
    return noun, pre, slant_phrase


def _noun_phrase(noun: str, pre: list[str], post: str) -> str:
    """'a small thick seven leaning right' from its parts."""
    words = pre + [noun] + ([post] if post else [])
    return f"{_article(words[0])} {' '.join(words)}"


def _caption(label: int, levels: tuple[int, int, int], rng: np.random.Generator) -> str:
    """One caption for one digit in one of four phrasings."""
    noun, pre, post = _parts(label, levels, rng)
    phrases = pre + ([post] if post else [])
    template = int(rng.integers(4))
    if template == 0:  # "a small thick seven leaning right"
        return _noun_phrase(noun, pre, post)
    if template == 1:  # "7, bold, leaning right"
        return ", ".join([NUMERALS[label]] + phrases)
    if template == 2:  # "the digit four, written thin and small"
        tail = f", written {' and '.join(phrases)}" if phrases else ""
        return f"the digit {DIGIT_WORDS[label]}{tail}"
    return f"handwritten {noun}" + (f", {', '.join(phrases)}" if phrases else "")  # "handwritten 3, fine, upright"


def _check_digits(base: ImageDataset) -> np.ndarray:
    """The base's labels as a numpy array, refusing datasets whose labels are not digits 0..9."""
    if base.labels is None:
        raise DataError(f"{base.name}: captioned digits need labels")
    labels = base.labels.numpy()
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{base.name}: captioned digits need labels 0..9, got {labels.min()}..{labels.max()}")
    return labels


def _level_rows(levels: dict[str, np.ndarray], i: int) -> tuple[int, int, int]:
    """(thickness, slant, size) levels of image i."""
    return int(levels["thickness"][i]), int(levels["slant"][i]), int(levels["height"][i])


def describe(images: torch.Tensor, labels: torch.Tensor | np.ndarray, seed: int = 0) -> list[str]:
    """One caption per image; words relative to the image's class, phrasing chosen from (seed, index)."""
    labels = np.asarray(labels, dtype=np.int64)
    attrs = measure_attributes(images)
    levels = attribute_levels(attrs, labels, tercile_cuts(attrs, labels))
    # A generator per (seed, index): a caption does not depend on how many other images are captioned.
    return [_caption(int(labels[i]), _level_rows(levels, i), np.random.default_rng([seed, i]))
            for i in range(len(labels))]


def _with_captions(dataset: ImageDataset, captions: list[str]) -> ImageDataset:
    """Set dataset.captions when ImageDataset has that field (added by the captions work), else leave it."""
    if any(f.name == "captions" for f in dataclasses.fields(ImageDataset)):
        dataset = dataclasses.replace(dataset, captions=captions)
    return dataset


def captioned_digits(base: ImageDataset, seed: int = 0) -> tuple[ImageDataset, list[str]]:
    """The base images and labels with one measured-attribute caption per image."""
    captions = describe(base.images, _check_digits(base), seed)
    return _with_captions(base, captions), captions


# ------------------------------------------------------------------------------------------------ pairs


def compose_pairs(base: ImageDataset, n: int, seed: int) -> tuple[ImageDataset, list[str], np.ndarray]:
    """n canvases (C, H, 2W) of two real digits side by side, position-bound captions, and (left, right) labels.

    The returned dataset's labels are the left digit's label (num_classes 10); the (n, 2) array holds both.
    """
    labels = _check_digits(base)
    if len(base) == 0 or n < 0:
        raise DataError(f"{base.name}: cannot compose {n} pairs from {len(base)} images")
    # Words use the base dataset's per-class terciles, measured on each source digit alone.
    attrs = measure_attributes(base.images)
    levels = attribute_levels(attrs, labels, tercile_cuts(attrs, labels))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(n, 2))
    canvases = torch.cat([base.images[idx[:, 0]], base.images[idx[:, 1]]], dim=3)
    pair_labels = labels[idx]
    captions = []
    for k in range(n):
        left, right = (_noun_phrase(*_parts(int(labels[j]), _level_rows(levels, j), rng)) for j in idx[k])
        order = int(rng.integers(3))
        if order == 0:
            captions.append(f"{left} on the left and {right} on the right")
        elif order == 1:
            captions.append(f"{right} on the right, {left} on the left")
        else:
            captions.append(f"on the left {left}, on the right {right}")
    dataset = ImageDataset(images=canvases.contiguous(), labels=torch.from_numpy(pair_labels[:, 0].copy()),
                           num_classes=10, name=f"{base.name}:pairs", class_names=[str(d) for d in range(10)])
    return _with_captions(dataset, captions), captions, pair_labels
