"""`diffusionlab evaluate --fid` end to end: a tiny digits run and a samples .npz, scored offline with the
domain extractor (trained once into a temporary cache), with the real-data floor printed beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffusionlab.training.config import deep_update, preset_config

from helpers import TINY, run_cli


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train 8 steps of the tiny digits model, then score it from the run dir and from its samples file."""
    root = tmp_path_factory.mktemp("evalcli")
    env = {"DIFFUSIONLAB_CACHE": str(root / "cache")}
    cfg = root / "cfg.json"
    cfg.write_text(json.dumps(deep_update(preset_config("digits"), deep_update(TINY, {"train": {"steps": 8}}))))
    out = run_cli("train", "--config", str(cfg), "--out", str(root / "run"), env=env)
    assert out.returncode == 0, out.stderr
    common = ["--fid", "--n", "200", "--sampler", "ddim", "--steps", "5", "--seed", "3"]
    first = run_cli("evaluate", str(root / "run"), *common, "--json", str(root / "run.json"), env=env)
    assert first.returncode == 0, first.stderr
    cache_files = sorted(p.relative_to(root / "cache") for p in (root / "cache").rglob("*") if p.is_file())
    # The same samples through `sample` and then `evaluate FILE.npz --dataset digits`.
    out = run_cli("sample", str(root / "run"), "--n", "200", "--sampler", "ddim", "--steps", "5", "--seed", "3",
                  "--out", str(root / "s.npz"), env=env)
    assert out.returncode == 0, out.stderr
    second = run_cli("evaluate", str(root / "s.npz"), "--fid", "--dataset", "digits", "--seed", "3", env=env)
    assert second.returncode == 0, second.stderr
    third = run_cli("evaluate", str(root / "run"), "--fid", "--samples", str(root / "s.npz"), "--seed", "3",
                    "--json", str(root / "run_samples.json"), env=env)
    assert third.returncode == 0, third.stderr
    return {"root": root, "env": env, "first": first, "second": second, "third": third, "cache_files": cache_files,
            "run": json.loads((root / "run.json").read_text()),
            "npz": json.loads((root / "s.eval.json").read_text()),
            "run_samples": json.loads((root / "run_samples.json").read_text())}


def test_evaluate_fid_prints_every_number_with_extractor_count_and_floor(scored: dict) -> None:
    out, q = scored["first"].stdout, scored["run"]["quality"]
    assert "FID" in out and "KID" in out and "precision" in out and "recall" in out and "IS" in out
    assert "real-data floor" in out and q["extractor"] in out and "200 samples vs 200 test images" in out
    assert q["n_fake"] == q["n_real"] == 200 and q["k"] == 3 and scored["run"]["sampling"]["nfe"] == 5
    # KID subsets are half of each set, so its spread over subsets is a real spread, not 0.
    assert q["kid_subset_size"] == 100 and q["kid_std"] > 0 and q["kid_mean"] > q["floor"]["kid_mean"]
    assert q["extractor"].startswith("domain-cnn") or "domain" in q["extractor"]
    floor = q["floor"]
    # 8 training steps make blobs, not digits: far above the real train-vs-test floor on every metric.
    assert floor["fid"] >= 0 and q["fid"] > 5 * floor["fid"] + 1
    assert floor["precision"] > 0.6 and floor["recall"] > 0.6 and q["precision"] < floor["precision"]
    assert 0 <= q["precision"] <= 1 and 0 <= q["recall"] <= 1
    # IS from the domain classifier lies in [1, number of classes]; real digits are near 10.
    assert 1 <= q["inception_score"][0] <= 10 and floor["inception_score"][0] > 5


def test_samples_file_gives_the_same_numbers_as_the_run(scored: dict) -> None:
    """`sample` + `evaluate FILE.npz` and `evaluate RUN --samples` score the identical images identically."""
    a, b, c = scored["run"]["quality"], scored["npz"]["quality"], scored["run_samples"]["quality"]
    for key in ("fid", "kid_mean", "precision", "recall"):
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
        assert a[key] == pytest.approx(c[key], rel=1e-9, abs=1e-12), key
    assert a["floor"]["fid"] == pytest.approx(b["floor"]["fid"], rel=1e-12)
    assert "samples from" in scored["second"].stdout and "real-data floor" in scored["second"].stdout


def test_extractor_and_reference_features_are_cached(scored: dict) -> None:
    """The later evaluations reused the trained extractor and reference features: the cache did not grow."""
    root = scored["root"]
    files = scored["cache_files"]
    assert any(str(p).startswith("domain-extractors") and p.suffix == ".safetensors" for p in files)
    assert any(str(p).startswith("reference-features") for p in files)
    after = sorted(p.relative_to(root / "cache") for p in (root / "cache").rglob("*") if p.is_file())
    assert after == files


def test_evaluate_bad_input_gives_one_line_errors(scored: dict, tmp_path: Path) -> None:
    root, env = scored["root"], scored["env"]
    cases = [
        (["evaluate", str(root / "s.npz"), "--fid"], "--dataset"),
        (["evaluate", str(root / "s.npz"), "--nll", "--dataset", "digits"], "run directory"),
        (["evaluate", str(tmp_path / "missing.npz"), "--fid", "--dataset", "digits"], "not found"),
        (["evaluate", str(root / "run"), "--fid", "--extractor", "inception"], "--inception-weights"),
    ]
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((20, 28, 28), np.uint8))
    cases.append((["evaluate", str(wrong), "--fid", "--dataset", "digits"], "shape"))
    for args, needle in cases:
        out = run_cli(*args, env=env)
        assert out.returncode != 0, args
        assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
