"""The benchmark's settling between runs: it ends what a run left behind, and only that,
and it waits for a quiet CPU by the numbers ``/proc/stat`` gives."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench import settle

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def start_sleeper(run_id: str | None) -> subprocess.Popen[bytes]:
    environ = {key: value for key, value in os.environ.items() if key != settle.MARKER_ENV}
    if run_id is not None:
        environ[settle.MARKER_ENV] = run_id
    return subprocess.Popen(SLEEPER, env=environ)


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_run_s_leftovers_are_ended_and_nothing_else(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    leftover = start_sleeper("this-run")
    other_run = start_sleeper("another-run")
    unmarked = start_sleeper(None)
    sleepers.extend([leftover, other_run, unmarked])

    assert settle.marked_processes("this-run") == [leftover.pid]
    assert settle.end_leftovers("this-run") == 1

    assert leftover.wait(timeout=10) != 0
    assert other_run.poll() is None
    assert unmarked.poll() is None
    assert settle.marked_processes("this-run") == []


def test_no_leftovers_is_zero() -> None:
    assert settle.end_leftovers("a-run-that-started-nothing") == 0


def test_busy_share_counts_everything_but_idle_and_io_wait() -> None:
    assert settle.busy_share((1000, 400), (2000, 650)) == pytest.approx(0.75)
    assert settle.busy_share((1000, 400), (1000, 400)) == 0.0


def readings(*shares: float) -> Iterator[tuple[int, int]]:
    """``cpu_times`` readings whose consecutive windows have these busy shares."""
    total = idle = 0
    yield total, idle
    for share in shares:
        total += 1000
        idle += round(1000 * (1 - share))
        yield total, idle
        yield total, idle


def test_waits_for_quiet_samples_in_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    busy, quiet = 0.9, settle.CPU_BUSY_QUIET_SHARE / 2
    shares = [busy, quiet, busy, *[quiet] * settle.QUIET_SAMPLES, busy]
    times = readings(*shares)
    windows: list[float] = []
    monkeypatch.setattr(settle, "cpu_times", lambda: next(times))
    monkeypatch.setattr(settle.time, "sleep", windows.append)

    share, was_quiet, _ = settle.wait_cpu_quiet(within=3600)

    assert was_quiet
    assert share == pytest.approx(quiet)
    assert len(windows) == 3 + settle.QUIET_SAMPLES


def test_gives_up_on_a_cpu_that_stays_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    times = readings(*[0.9] * 1000)
    clock = iter(range(0, 10_000, 1))
    monkeypatch.setattr(settle, "cpu_times", lambda: next(times))
    monkeypatch.setattr(settle.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(settle.time, "monotonic", lambda: float(next(clock)))

    share, was_quiet, _ = settle.wait_cpu_quiet(within=20)

    assert not was_quiet
    assert share == pytest.approx(0.9)


def test_the_busiest_processes_come_first_with_their_share_of_a_core() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    before = {1: ("idle", 100), 2: ("spinner", 100), 3: ("half", 100), 4: ("gone", 0)}
    after = {1: ("idle", 100), 2: ("spinner", 100 + ticks), 3: ("half", 100 + ticks // 2)}
    after[5] = ("new", 10)

    assert settle.busiest(before, after, seconds=1.0) == ("spinner 100%", "half 50%")


def test_reads_this_process_s_own_cpu_use() -> None:
    name, jiffies = settle.process_cpu()[os.getpid()]
    assert name.startswith("python") or name == "pytest"
    assert jiffies > 0


def test_a_disk_summary_counts_the_fsyncs_over_the_stall_threshold() -> None:
    seen = settle.summary([0.3, 0.4, settle.STALL_MS, settle.STALL_MS + 0.1, 250.0])

    assert seen == settle.DiskSeen(samples=5, fsync_p50_ms=10.0, fsync_max_ms=250.0, stalls=2)


def test_a_watch_with_no_sample_says_so() -> None:
    assert settle.summary([]) == settle.DiskSeen(0, 0.0, 0.0, 0)


def test_the_watch_samples_the_disk_until_its_block_ends() -> None:
    with settle.watching() as watch:
        assert watch.first.wait(timeout=10)
    ended_with = len(watch.times)

    assert ended_with >= 1
    assert all(each >= 0 for each in watch.times)
    assert watch.seen().samples == ended_with
    assert len(watch.times) == ended_with, "the sampler stopped with the block"
