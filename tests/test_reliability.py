"""Nothing is lost, nothing is silent (issue 14): the divergence guard and rollback, resume fallbacks, config drift,
checkpoints on SIGINT/SIGTERM, one writer per run, and kills in the middle of a checkpoint write (fault injection)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusionlab.training.checkpoint import list_checkpoints
from helpers import TINY, run_cli

STEPS = 12


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    for w in words:
        assert w in last, (w, last)
    return last


def _same_weights(a: Path, b: Path) -> None:
    for name in ("model", "ema", "optimizer"):
        x, y = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), f"{name}:{k} differs"


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.json"
    p.write_text(json.dumps(TINY))
    return p


@pytest.fixture(scope="module")
def reference(tiny: Path, tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS steps, checkpoints every 4: what every interrupted run must equal bit for bit."""
    run = tmp_path_factory.mktemp("ref") / "run"
    proc = run_cli("train", "--config", str(tiny), "--steps", str(STEPS), "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    return run


# ---- the divergence guard --------------------------------------------------------------------------------------

def test_a_nonfinite_step_changes_nothing_and_is_counted():
    from accelerate import Accelerator

    from diffusionlab.training.loop import StepContext

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    ctx = StepContext(1, torch.Generator(), torch.arange(2), slice(0, 2), Accelerator(cpu=True))
    (net(torch.ones(1, 3)).sum()).backward()
    assert ctx.apply(opt, net.parameters(), torch.tensor(1.0), 1.0)  # a finite step steps
    before = {k: v.clone() for k, v in net.state_dict().items()}
    moments = {k: v.clone() for k, v in opt.state[net.weight].items()}
    for bad in (float("nan"), float("inf")):
        loss = net(torch.full((1, 3), bad)).sum()  # NaN or inf gradient
        loss.backward()
        assert not ctx.apply(opt, net.parameters(), loss, 1.0)
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        assert all(torch.equal(moments[k], v) for k, v in opt.state[net.weight].items())
        assert net.weight.grad is None  # and the bad gradient is gone
    assert ctx.skipped == [opt, opt]


def test_a_checkpoint_with_nonfinite_weights_is_never_written(tmp_path: Path):
    from diffusionlab.training.checkpoint import NonFiniteError, list_checkpoints, save_checkpoint

    w = {"w": torch.ones(3)}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=1.0).state_dict()
    save_checkpoint(tmp_path, 1, w, w, opt, {}, keep=1)
    with pytest.raises(NonFiniteError, match="ema/w"):
        save_checkpoint(tmp_path, 2, w, {"w": torch.tensor([1.0, float("nan"), 0.0])}, opt, {}, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]  # the good one is not pruned for the bad one
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001"]  # no temp left


def test_a_diverging_run_rolls_back_then_stops_with_exit_3_keeping_its_good_checkpoint(tiny: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert run_cli("train", "--config", str(tiny), "--steps", "8", "--out", str(run)).returncode == 0
    good = _digest(run / "checkpoints")
    config_before = (run / "config.json").read_bytes()
    # --lr 1e30: the first step throws the weights to ~1e30 and every later loss is NaN
    proc = run_cli("train", "--resume", "--out", str(run), "--steps", "60", "--lr", "1e30", "--allow-change",
                   "--keep-checkpoints", "1")
    last = _one_line_error(proc, 3, "diverged", "step_00000008", "is kept")
    assert "after 2 rollback(s)" in last
    assert proc.stderr.count("rolled back to step 8") == 2  # two rollbacks, each with half the learning rate
    assert "x0.5" in proc.stderr and "x0.25" in proc.stderr
    assert _digest(run / "checkpoints") == good  # no newer checkpoint, none deleted by pruning, none changed
    assert (run / "config.json").read_bytes() == config_before  # config.json still mirrors the newest checkpoint
    events = [json.loads(x)["event"] for x in (run / "history.jsonl").read_text().splitlines()]
    assert events.count("rollback") == 2 and events[-1] == "diverged"
    # the run is not lost: it resumes from its last good state with its own learning rate
    proc = run_cli("train", "--resume", "--out", str(run), "--steps", "10")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-2:] == [8, 10] and all(r["loss"] < 10 for r in rows)


def test_a_run_that_ends_in_a_nonfinite_streak_writes_no_checkpoint(tiny: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert run_cli("train", "--config", str(tiny), "--steps", "4", "--out", str(run)).returncode == 0
    proc = run_cli("train", "--resume", "--out", str(run), "--steps", "9", "--lr", "1e30", "--allow-change")
    _one_line_error(proc, 3, "streak", "step_00000004")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000004"]


# ---- resume: fallbacks and leftovers ---------------------------------------------------------------------------

def test_resume_falls_back_past_a_damaged_checkpoint_and_a_torn_metrics_line(tiny: Path, reference: Path,
                                                                             tmp_path: Path):
    run = tmp_path / "run"
    assert run_cli("train", "--config", str(tiny), "--steps", "8", "--out", str(run)).returncode == 0
    model = _ckpt(run, 8) / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-7])  # truncated newest checkpoint
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 10, "loss": 0.9')  # a torn last line
    (run / "checkpoints" / ".step_00000012.999999999-0123456789abcdef.tmp").mkdir()  # a dead writer's leftovers
    (run / ".config.json.999999999-0123456789abcdef.tmp").write_text("{")
    proc = run_cli("train", "--resume", "--out", str(run), "--steps", str(STEPS))
    assert proc.returncode == 0, proc.stderr
    assert "step_00000008 is unreadable" in proc.stderr and "falling back" in proc.stderr
    assert "removed 2 temporary file(s)" in proc.stderr
    assert not list((run / "checkpoints").glob(".*")) and not list(run.glob(".*.tmp"))
    _same_weights(_ckpt(reference, STEPS), _ckpt(run, STEPS))  # from step 4, bit for bit
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_a_checkpoint_of_the_same_step_is_exchanged_never_missing(tmp_path: Path):
    from diffusionlab.atomic import clean_stale_temps, replace_folder

    final, new = tmp_path / "step_1", tmp_path / "new"
    final.mkdir()
    (final / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    replace_folder(new, final)
    assert (final / "a").read_text() == "new" and not new.exists()
    # where the system cannot exchange, the old folder is renamed aside first; a kill between the two renames
    # leaves it there, and the next run puts it back
    final.rename(tmp_path / ".step_1.999999999-0123456789abcdef.old")
    clean_stale_temps(tmp_path)
    assert (final / "a").read_text() == "new"


def test_temporary_names_are_unique_per_process_and_call(tmp_path: Path):
    from diffusionlab.atomic import temp_name

    a, b = temp_name(tmp_path / "x.npz"), temp_name(tmp_path / "x.npz")
    assert a != b and f".{os.getpid()}-" in a.name and a.parent == tmp_path


# ---- config drift ----------------------------------------------------------------------------------------------

def test_config_drift_on_resume_and_sampling(tiny: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert run_cli("train", "--config", str(tiny), "--steps", "4", "--out", str(run)).returncode == 0
    original = json.loads((run / "config.json").read_text())
    before = _digest(run)

    def edited(section: str, key: str, value) -> None:
        cfg = json.loads(json.dumps(original))
        cfg[section][key] = value
        (run / "config.json").write_text(json.dumps(cfg, indent=2))

    edited("process", "schedule", "linear")  # changes the model: refused, always
    _one_line_error(run_cli("train", "--resume", "--out", str(run), "--steps", "6", "--allow-change"), 2,
                    "process.schedule", "changes what the run is")
    # sample trusts the checkpoint, not the edited side file (the edit would change every sample)
    a = run_cli("sample", str(run), "--n", "4", "--steps", "3", "--out", str(tmp_path / "a.npz"))
    assert a.returncode == 0 and "using the checkpoint's" in a.stderr, a.stderr
    edited("train", "lr", 1e-3)  # an optimiser change: only with --allow-change
    _one_line_error(run_cli("train", "--resume", "--out", str(run), "--steps", "6"), 2, "train.lr", "--allow-change")
    _one_line_error(run_cli("train", "--resume", "--out", str(run), "--steps", "6", "--seed", "3"), 2, "train.seed")
    (run / "config.json").write_text(json.dumps(original, indent=2))
    b = run_cli("sample", str(run), "--n", "4", "--steps", "3", "--out", str(tmp_path / "b.npz"))
    assert b.returncode == 0 and "using the checkpoint's" not in b.stderr
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert _digest(run) == before  # every refused resume left every byte as it was
    _one_line_error(run_cli("train", "--resume", "--out", str(run), "--steps", "6", "--lr", "1e-3"), 2,
                    "train.lr", "--allow-change")
    ok = run_cli("train", "--resume", "--out", str(run), "--steps", "6", "--lr", "1e-3", "--allow-change")
    assert ok.returncode == 0, ok.stderr
    state = json.loads((_ckpt(run, 6) / "state.json").read_text())
    assert state["config"]["train"]["lr"] == 1e-3
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["event"] == "config_change" and history[-1]["changes"] == ["train.lr 0.0002 -> 0.001"]


# ---- interrupts and the lock -----------------------------------------------------------------------------------

def _start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "diffusionlab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full)


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while not path.exists() or not path.read_text().strip():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_checkpoints_the_current_step_and_the_run_resumes_bit_exactly(sig, tiny: Path, tmp_path: Path):
    steps = 100_000
    common = ["--config", str(tiny), "--checkpoint-every", "100000", "--log-every", "1"]
    run = tmp_path / "run"
    proc = _start(["train", *common, "--steps", str(steps), "--out", str(run)])
    _wait_for(run / "metrics.jsonl", proc)  # training, and no checkpoint yet
    if sig == signal.SIGINT:  # a second writer, --resume included, is refused while the first holds the run
        _one_line_error(run_cli("train", "--resume", "--out", str(run)), 2, "another process", str(proc.pid))
        _one_line_error(run_cli("train", "--config", str(tiny), "--out", str(run)), 2, "another process")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert "interrupted" in last and f"resume with: diffusionlab train --resume --out {run}" in last
    (step,) = [s for s, _ in list_checkpoints(run)]
    assert 0 < step < steps, "the run finished before the signal"
    assert f"step_{step:08d}" in last
    full = tmp_path / "full"
    assert run_cli("train", *common, "--steps", str(step + 2), "--out", str(full)).returncode == 0
    resumed = run_cli("train", "--resume", "--out", str(run), "--steps", str(step + 2))
    assert resumed.returncode == 0, resumed.stderr
    _same_weights(_ckpt(full, step + 2), _ckpt(run, step + 2))


# ---- kill -9 in the middle of the writes (fault injection) -----------------------------------------------------

@pytest.mark.parametrize("fault", ["checkpoint:tensors@8", "checkpoint:renamed@8", "metrics:row@10"])
def test_a_kill_during_a_write_loses_nothing_and_resumes_bit_exactly(fault, tiny: Path, reference: Path,
                                                                     tmp_path: Path):
    run = tmp_path / "run"
    proc = run_cli("train", "--config", str(tiny), "--steps", str(STEPS), "--out", str(run),
                   env={"DIFFUSIONLAB_FAULT": fault})
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    if fault.startswith("checkpoint:tensors"):
        assert names[1] == "step_00000004" and names[0].startswith(".step_00000008.")  # half-written, hidden
    resumed = run_cli("train", "--resume", "--out", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000004", "step_00000008",
                                                                        "step_00000012"]
    _same_weights(_ckpt(reference, STEPS), _ckpt(run, STEPS))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(r["step"], r["loss"]) for r in ref_rows]


# ---- samples stream to disk ------------------------------------------------------------------------------------

def test_samples_stream_to_an_npz_in_batches_atomically(tmp_path: Path):
    import numpy as np

    from diffusionlab.viz import SampleWriter, write_samples

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 5, 4), generator=g, dtype=torch.uint8)
    writer = SampleWriter(tmp_path / "s.npz", 300, (3, 5, 4))
    assert not (tmp_path / "s.npz").exists()  # nothing under the final name until it is complete
    for start in range(0, 300, 64):
        writer.write(images[start : start + 64])
    grid = writer.close()
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        assert f["images"].dtype == np.uint8 and np.array_equal(f["images"], images.permute(0, 2, 3, 1).numpy())
    assert grid.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "s.png"]
    write_samples(images, tmp_path / "t.npz")  # the one-shot path writes the same bytes
    assert (tmp_path / "t.npz").read_bytes() == (tmp_path / "s.npz").read_bytes()
    broken = SampleWriter(tmp_path / "u.npz", 10, (1, 2, 2))
    broken.write(torch.zeros(4, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="4 images written of the 10"):
        broken.close()
    assert not list(tmp_path.glob("*u.npz*"))  # an incomplete file is never left behind


def test_sample_batches_do_not_change_the_images(tmp_path: Path, reference: Path):
    import numpy as np

    outs = []
    for batch in ("7", "256"):
        out = tmp_path / f"b{batch}.npz"
        proc = run_cli("sample", str(reference), "--n", "20", "--steps", "3", "--batch-size", batch, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        with np.load(out) as f:
            outs.append(f["images"])
    assert outs[0].shape == (20, 8, 8) and np.array_equal(outs[0], outs[1])  # DDIM eta 0: batching is invisible
