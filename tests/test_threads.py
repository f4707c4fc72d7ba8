"""Threads and processes (threads.py, cli/launch.py): one thread per free core, a warning when other processes would
make the thread team spin-wait, --threads and --procs from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusionlab.cli.launch import without_procs
from diffusionlab.errors import ConfigError
from diffusionlab.threads import plan_threads, usable_cores

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
