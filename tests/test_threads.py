"""Threads and processes (threads.py, cli/launch.py): one thread per free core, a warning when other processes would
make the thread team spin-wait, --threads and --procs from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusionlab.cli.launch import without_procs
from diffusionlab.errors import ConfigError
from diffusionlab.threads import ThreadWatch, plan_threads, threads_for, usable_cores

from helpers import run_cli


def test_an_idle_machine_gets_one_thread_per_core():
    plan = plan_threads(None, cores=8, busy=0.1, processes=1)
    assert plan.threads == 8 and plan.warning is None


def test_busy_cores_are_left_to_their_owners_with_a_warning():
    plan = plan_threads(None, cores=2, busy=1.0, processes=1)  # another 1-core job: a 2-thread team would spin-wait
    assert plan.threads == 1
    assert "1.0 of the 2 cores busy" in plan.warning and "using 1" in plan.warning
    assert plan_threads(None, cores=2, busy=2.6, processes=1).threads == 1  # at least one
    assert plan_threads(None, cores=8, busy=2.0, processes=1).threads == 6


def test_an_explicit_thread_count_is_kept_and_warned_about_only_when_it_oversubscribes():
    assert plan_threads(2, cores=2, busy=0.0, processes=1) == plan_threads(2, cores=2, busy=0.0, processes=1)
    plan = plan_threads(2, cores=2, busy=1.0, processes=1)
    assert plan.threads == 2 and "OMP_WAIT_POLICY=PASSIVE" in plan.warning
    assert plan_threads(1, cores=2, busy=1.9, processes=1).warning is None  # one thread has no team to wait for
    with pytest.raises(ConfigError, match="between 1 and"):
        plan_threads(0, cores=2, busy=0.0, processes=1)


def test_data_parallel_processes_share_the_cores():
    assert plan_threads(None, cores=8, busy=None, processes=4).threads == 2  # siblings are not "other processes"
    assert plan_threads(None, cores=2, busy=None, processes=4).threads == 1


def test_usable_cores_is_at_least_one():
    assert 1 <= usable_cores()


def test_without_procs_removes_both_spellings():
    assert without_procs(["train", "--procs", "2", "--steps", "3"]) == ["train", "--steps", "3"]
    assert without_procs(["train", "--procs=auto", "--out", "r"]) == ["train", "--out", "r"]


@pytest.mark.parametrize("args,message", [
    (["--threads", "0"], "expected a number >= 1"),
    (["--threads", "100000"], "at most 1024 threads"),
    (["--procs", "0"], "expected 1 to 256 processes"),
    (["--procs", "many"], "expected 'auto' or a number"),
])
def test_bad_thread_or_process_counts_are_one_line_errors(args, message, tmp_path: Path):
    res = run_cli("train", "--steps", "1", "--out", str(tmp_path / "r"), *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()


def test_threads_flag_sets_the_thread_count(tiny_config: Path, tmp_path: Path):
    res = run_cli("train", "--config", str(tiny_config), "--steps", "1", "--threads", "1", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert "1 thread(s)" in res.stdout


def test_procs_two_trains_data_parallel_under_torchrun(tiny_config: Path, tmp_path: Path):
    res = run_cli("train", "--config", str(tiny_config), "--steps", "2", "--batch-size", "16", "--procs", "2",
                  "--out", str(tmp_path / "r"), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "launching 2 data-parallel processes x 1 thread(s)" in res.stdout
    assert "batch 16 on 2 process(es)" in res.stdout
    assert (tmp_path / "r" / "checkpoints" / "step_00000002").is_dir()


class FakeCPU:
    """An injected clock and cpu_seconds(): other processes use `others` cores' worth, this one `own`."""

    def __init__(self):
        self.t, self.busy, self.own = 0.0, 0.0, 0.0

    def advance(self, seconds: float, others: float, own: float = 1.0) -> None:
        self.t += seconds
        self.busy += (others + own) * seconds
        self.own += own * seconds

    def watch(self, wanted: int, cores: int) -> ThreadWatch:
        return ThreadWatch(wanted, cores, every=5.0, clock=lambda: self.t, sample=lambda: (self.busy, self.own))


@pytest.fixture
def keep_threads():
    """The watch sets torch's thread count: give the test process its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_for_leaves_the_busy_cores_and_never_exceeds_the_wanted_count():
    assert threads_for(2, 2, 0.0) == 2 and threads_for(2, 2, 0.4) == 2  # under half a core: noise, not a job
    assert threads_for(2, 2, 0.7) == 1 and threads_for(2, 2, 1.9) == 1  # at least one
    assert threads_for(4, 8, 0.0) == 4 and threads_for(4, 8, 3.0) == 4 and threads_for(4, 8, 5.2) == 3


def test_the_watch_drops_to_the_free_cores_while_another_job_runs_and_takes_them_back(keep_threads):
    cpu = FakeCPU()
    torch.set_num_threads(2)
    watch = cpu.watch(2, 2)
    cpu.advance(5, others=0.0, own=2.0)
    assert watch.poll() is None and torch.get_num_threads() == 2  # alone
    cpu.advance(1, others=1.0)
    assert watch.poll() is None  # before 5 s: no look at all
    cpu.advance(4, others=1.0, own=1.3)
    assert watch.poll() is None and torch.get_num_threads() == 2  # seen once: not yet
    cpu.advance(5, others=0.7, own=1.3)
    before, now, others = watch.poll()  # seen twice: drop to the free core
    assert (before, now) == (2, 1) and others == pytest.approx(0.7) and torch.get_num_threads() == 1
    cpu.advance(5, others=0.0)
    assert watch.poll() is None  # a single quiet window (the other job between two phases) changes nothing
    cpu.advance(5, others=1.0)
    assert watch.poll() is None and torch.get_num_threads() == 1
    cpu.advance(5, others=0.0)
    assert watch.poll() is None
    cpu.advance(5, others=0.05)
    assert watch.poll()[:2] == (1, 2) and torch.get_num_threads() == 2  # the other job ended: the cores come back
    for _ in range(3):
        cpu.advance(5, others=0.0, own=2.0)
        assert watch.poll() is None and torch.get_num_threads() == 2  # never above the planned count


def test_a_thread_count_that_was_asked_for_is_not_watched():
    from diffusionlab import threads

    before = torch.get_num_threads()
    try:
        threads.apply_threads(1)
        assert threads.thread_watch() is None
        assert plan_threads(None, cores=2, busy=0.0, processes=1).wanted == 2  # planned: watched, capped at 2
        assert plan_threads(None, cores=2, busy=1.0, processes=1).wanted == 2
        assert plan_threads(2, cores=2, busy=0.0, processes=1).wanted is None  # asked for: kept
        assert plan_threads(None, cores=8, busy=0.0, processes=4).wanted is None  # data-parallel siblings
    finally:
        torch.set_num_threads(before)


def _events(run: Path) -> list[dict]:
    path = run / "history.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _wait_for_threads(run: Path, proc: subprocess.Popen, threads: int, seconds: float = 90) -> None:
    """Until the run's newest thread count (its start, then each change) is `threads`."""
    deadline = time.time() + seconds
    while True:
        counts = [e["threads"] for e in _events(run) if e["event"] in ("started", "threads")]
        if counts and counts[-1] == threads:
            return
        assert proc.poll() is None and time.time() < deadline, (counts, proc.poll())
        time.sleep(0.1)


def test_a_training_gives_a_core_to_a_job_started_after_it_and_takes_it_back(tiny_config: Path, tmp_path: Path):
    if usable_cores() < 2:
        pytest.skip("a second job can only take a core from a team of two or more")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "DIFFUSIONLAB_DEBUG")}
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "diffusionlab.cli", "train", "--config", str(tiny_config),
                             "--steps", "10000000", "--checkpoint-every", "10000000", "--sample-every", "10000000",
                             "--log-every", "1000", "--out", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_threads(run, proc, 2)  # an idle machine: one thread per core
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another job, one core
        try:
            _wait_for_threads(run, proc, 1)
        finally:
            burner.kill()
            burner.wait()
        _wait_for_threads(run, proc, 2)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    changes = [e for e in _events(run) if e["event"] == "threads"]
    assert [(e["was"], e["threads"]) for e in changes][-2:] == [(2, 1), (1, 2)], changes
    assert changes[-2]["busy_elsewhere"] >= 0.5 and changes[-1]["busy_elsewhere"] < 0.5
    assert "core(s) busy: 2 -> 1 thread(s)" in err and "core(s) busy: 1 -> 2 thread(s)" in err


# --procs auto on a CPU (cli/launch.py): 2 processes x 1 thread only where that was measured to train faster.

def test_procs_auto_picks_two_processes_only_where_they_were_measured_to_pay():
    from diffusionlab.cli.launch import PROCS_MEASURED, auto_procs_on_cpu

    # Measured pairs (BENCHMARKS.md): mnist at 32 channels 1.15x in float32 on AVX2 but 0.97x in bf16 on avx512_bf16;
    # at 16 channels 1.14x in bf16; folder32 1.11x in float32 on AVX2. digits measured 1.04x: within the noise.
    assert {k for k, (procs, _) in PROCS_MEASURED.items() if procs == 2} == {
        ("mnist", 32, "float32"), ("mnist", 16, "float32"), ("mnist", 16, "bf16"), ("folder32", 32, "float32")}
    avx2 = dict(preset="mnist", base_channels=32, batch_size=64, precision="no", native_bf16=False,
                planned_threads=2, idle=True)
    bf16 = {**avx2, "base_channels": 16, "precision": "bf16", "native_bf16": True}
    for setting, evidence in [(avx2, "1.15x"), ({**avx2, "base_channels": 16}, "not paired"), (bf16, "1.14x"),
                              ({**avx2, "preset": "folder32"}, "1.11x")]:
        choice = auto_procs_on_cpu(**setting)
        assert choice.procs == 2 and evidence in choice.reason and setting["preset"] in choice.reason, choice
    for setting, why in [({**bf16, "base_channels": 32}, "3.44 against 3.33"),  # measured slower: one process
                         ({**avx2, "native_bf16": True}, "float32 on a CPU with native bf16"),
                         ({**avx2, "precision": "bf16"}, "emulated"), ({**bf16, "base_channels": 24}, "measured"),
                         ({**avx2, "base_channels": None}, "measured"), ({**bf16, "planned_threads": 0},
                                                                         "--threads or OMP_NUM_THREADS"),
                         ({**avx2, "planned_threads": 1}, "2 cores"), ({**bf16, "idle": False}, "busy"),
                         ({**avx2, "batch_size": 63}, "63"), ({**avx2, "preset": "digits"}, "measured"),
                         ({**avx2, "preset": "mnist-ldm"}, "measured"), ({**avx2, "preset": "mnist-ae"}, "measured"),
                         ({**bf16, "preset": None}, "measured")]:
        choice = auto_procs_on_cpu(**setting)
        assert choice.procs == 1 and why in choice.reason, (setting, choice)


def test_procs_auto_reads_the_cpu_the_precision_and_this_process_thread_plan(monkeypatch, tmp_path: Path):
    import diffusionlab.threads as threads
    import diffusionlab.training.precision as precision
    from diffusionlab.cli import build_parser, config_for_train, launch
    from diffusionlab.cli.launch import resolve_procs
    from diffusionlab.cli.train import config_for_autoencoder
    from diffusionlab.threads import ThreadPlan

    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def cfg(*flags: str):
        args = build_parser().parse_args(["train", *flags, "--out", str(tmp_path / "r")])
        return config_for_train(args)[0]

    mnist = cfg("--preset", "mnist", "--data-dir", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda cpuinfo=None: ())  # an AVX2-only CPU
    monkeypatch.setattr(threads, "_applied", None)  # main(argv) called in-process: its caller's threads, one process
    assert resolve_procs("auto", mnist).procs == 1
    monkeypatch.setattr(threads, "_applied", ThreadPlan(2, "2 physical core(s)", wanted=2))  # planned, idle
    assert resolve_procs("auto", mnist).procs == 2
    assert resolve_procs(1, mnist).procs == 1 and resolve_procs(3, mnist).procs == 3  # asked for: kept
    assert resolve_procs("auto", cfg("--preset", "mnist", "--data-dir", str(tmp_path), "--mixed-precision",
                                     "bf16")).procs == 1
    assert resolve_procs("auto", cfg("--preset", "digits")).procs == 1
    ae = config_for_autoencoder(build_parser().parse_args(  # the first stage reads the same table (measured 1.02x)
        ["train-autoencoder", "--preset", "mnist-ae", "--data-dir", str(tmp_path), "--out", str(tmp_path / "ae")]))[0]
    choice = resolve_procs("auto", ae)
    assert choice.procs == 1 and "measured to pay only for folder32 (32 channels" in choice.reason, choice
    monkeypatch.setitem(launch.PROCS_MEASURED, ("mnist-ae", ae.model.get("base_channels") or 0, "float32"),
                        (2, "as if measured"))
    assert resolve_procs("auto", ae).procs == 2  # (monkeypatch restores the table after the test)
    monkeypatch.setattr(threads, "_applied", ThreadPlan(1, "1 of 2 cores free", "busy", wanted=2))  # another job
    assert resolve_procs("auto", mnist).procs == 1
    monkeypatch.setattr(threads, "_applied", ThreadPlan(2, "OMP_NUM_THREADS"))  # chosen by the user
    assert resolve_procs("auto", mnist).procs == 1
    monkeypatch.setattr(threads, "_applied", ThreadPlan(2, "2 physical core(s)", wanted=2))
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda cpuinfo=None: ("avx512_bf16",))
    assert resolve_procs("auto", mnist).procs == 2  # the preset's 16 channels in bf16: measured 1.14x
    wide = cfg("--preset", "mnist", "--data-dir", str(tmp_path), "--base-channels", "32")
    assert resolve_procs("auto", wide).procs == 1  # 32 channels in bf16: one process was faster
    assert resolve_procs("auto", cfg("--preset", "mnist", "--data-dir", str(tmp_path), "--mixed-precision",
                                     "no")).procs == 1  # float32 with native bf16: not measured


def test_a_resumed_data_parallel_run_keeps_its_layout_and_continues_bit_exactly(tiny_config: Path, tmp_path: Path):
    from safetensors.torch import load_file

    if usable_cores() < 2:
        pytest.skip("two data-parallel processes x 1 thread need two cores")
    common = ["--config", str(tiny_config), "--batch-size", "16", "--checkpoint-every", "2"]
    whole = run_cli("train", *common, "--steps", "4", "--procs", "2", "--out", str(tmp_path / "whole"), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    half = run_cli("train", *common, "--steps", "2", "--procs", "2", "--out", str(tmp_path / "half"), timeout=600)
    assert half.returncode == 0, half.stderr[-3000:]
    resumed = run_cli("train", "--resume", "--out", str(tmp_path / "half"), "--steps", "4", timeout=600)  # auto
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "launching 2 data-parallel processes x 1 thread(s) (torchrun; the layout the run was trained in)" in \
        resumed.stdout and "batch 16 on 2 process(es)" in resumed.stdout
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step_00000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "half" / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
