"""Bring the machine to the same quiet state before every system's scenario.

The scenarios run one after another, and what one leaves behind lands on the next:
the dirty pages of a peer's files (written back by the kernel some 30 s later, when
the next system is measuring), PostgreSQL's checkpoint of what procrastinate and
taskq-postgresql wrote (its writes spread over minutes, its fsyncs in a burst at the
end), worker processes still exiting, and the CPU they use. On a 2-core machine any
of these turns the next system's fsyncs and wake-ups from a fraction of a millisecond
into tens of milliseconds. So before every run, whichever system it is:

1. end what the previous run left: any process that carries this harness run's
   marker in its environment (every process a run starts inherits it), so nothing
   else on the machine is touched;
2. ``sync``: write every dirty page now, not during the next measurement;
3. ``CHECKPOINT`` on PostgreSQL: its dirty buffers written and fsynced now;
4. wait (at most ``SETTLE_WITHIN_SECONDS``) until the CPU has been mostly idle for a
   few samples in a row.

What the machine looked like when the run began (CPU busy share, fsync latency of a
small probe file, how long settling took) goes with the run's figures into the
results, so a noisy run shows as such.

Settling cannot stop the disk from stalling during a run: on a shared disk an fsync
now and then takes tens or hundreds of milliseconds for reasons outside the run
(another tenant's writeback), every durable commit waits for one, and the stall shows
as the latency tail of whichever system is being measured. So the harness also
watches the disk while each run measures (``watching``: a 4 KB write+fsync every
``WATCH_GAP_SECONDS`` from a thread of the harness, the same for every system), and the
results say which runs had the disk stall under them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

# Every process a harness run starts carries this variable, set to that run's own id.
MARKER_ENV = "TASKQ_BENCH_RUN"
SETTLE_WITHIN_SECONDS = 30.0
# The CPU counts as quiet when, over each of QUIET_SAMPLES windows in a row, at most
# this share of all cores' time was busy.
CPU_SAMPLE_SECONDS = 0.5
CPU_BUSY_QUIET_SHARE = 0.2
QUIET_SAMPLES = 3
LEFTOVER_EXIT_SECONDS = 5.0
BUSIEST_SHOWN = 3
FSYNC_PROBES = 20
FSYNC_PROBE_BYTES = 4096
FSYNC_PROBE_GAP_SECONDS = 0.01
# The watch during a run: one probe every WATCH_GAP_SECONDS; an fsync of 4 KB that takes
# longer than STALL_MS (dozens of times the usual) is a stall.
WATCH_GAP_SECONDS = 0.05
STALL_MS = 10.0


@dataclass(frozen=True)
class Quiet:
    """The machine as a run found it, after settling."""

    settle_seconds: float
    leftovers_ended: int
    checkpoint: str
    # As the previous run left the machine, then as this run found it.
    fsync_before_p50_ms: float
    fsync_before_max_ms: float
    cpu_busy_share: float
    cpu_quiet: bool
    fsync_p50_ms: float
    fsync_max_ms: float
    # The processes that used the most CPU in the last sample: who kept it busy.
    busiest: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def cpu_times() -> tuple[int, int]:
    """(all, idle) jiffies of every core since boot; idle includes waiting for I/O."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(value) for value in fields]
    return sum(values), values[3] + values[4]


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time spent busy between two ``cpu_times`` readings."""
    total = after[0] - before[0]
    idle = after[1] - before[1]
    return 1.0 - idle / total if total > 0 else 0.0


def process_cpu() -> dict[int, tuple[str, int]]:
    """Every process's (command name, CPU jiffies used so far)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return found


def busiest(
    before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], seconds: float
) -> tuple[str, ...]:
    """The BUSIEST_SHOWN processes that used the most CPU between two readings, with
    the share of one core each used."""
    ticks = os.sysconf("SC_CLK_TCK") * seconds
    used = [
        (jiffies - before[pid][1], name)
        for pid, (name, jiffies) in after.items()
        if pid in before and jiffies > before[pid][1]
    ]
    used.sort(reverse=True)
    return tuple(f"{name} {100 * jiffies / ticks:.0f}%" for jiffies, name in used[:BUSIEST_SHOWN])


def marked_processes(run_id: str) -> list[int]:
    """Processes other than this one whose environment carries ``run_id``."""
    wanted = f"{MARKER_ENV}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def end_leftovers(run_id: str) -> int:
    """Stop what the previous run left running (SIGTERM, then SIGKILL); how many there were."""
    leftovers = marked_processes(run_id)
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)
        deadline = time.monotonic() + LEFTOVER_EXIT_SECONDS
        while marked_processes(run_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not marked_processes(run_id):
            break
    return len(leftovers)


def checkpoint(conninfo: str) -> str:
    """PostgreSQL writes and fsyncs its dirty buffers now; "done", or why not."""
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
            connection.execute("CHECKPOINT")
    except Exception as error:  # the peers that need PostgreSQL will fail visibly
        return f"not done: {type(error).__name__}"
    return "done"


def wait_cpu_quiet(within: float) -> tuple[float, bool, tuple[str, ...]]:
    """Wait until QUIET_SAMPLES windows in a row were quiet; (last share, quiet?, the
    busiest processes of the last window)."""
    deadline = time.monotonic() + within
    quiet_in_a_row = 0
    share, users = 1.0, ()
    while quiet_in_a_row < QUIET_SAMPLES:
        if time.monotonic() > deadline:
            return share, False, users
        before, processes = cpu_times(), process_cpu()
        time.sleep(CPU_SAMPLE_SECONDS)
        share = busy_share(before, cpu_times())
        users = busiest(processes, process_cpu(), CPU_SAMPLE_SECONDS)
        quiet_in_a_row = quiet_in_a_row + 1 if share <= CPU_BUSY_QUIET_SHARE else 0
    return share, True, users


def fsync_probe() -> list[float]:
    """Milliseconds each of a few small write+fsync pairs took, in the temporary folder
    where the SQLite-backed systems keep their files."""
    times = []
    with tempfile.NamedTemporaryFile(prefix="taskq-bench-probe-") as probe:
        for _ in range(FSYNC_PROBES):
            times.append(fsync_ms(probe.fileno()))
            time.sleep(FSYNC_PROBE_GAP_SECONDS)
    return times


def settle(run_id: str, postgres_conninfo: str) -> Quiet:
    """Steps 1 to 4 of the module's docstring, with a look at the fsync latency before
    and after."""
    started = time.monotonic()
    before = fsync_probe()
    leftovers = end_leftovers(run_id)
    os.sync()
    done = checkpoint(postgres_conninfo)
    share, quiet, users = wait_cpu_quiet(SETTLE_WITHIN_SECONDS - (time.monotonic() - started))
    fsyncs = fsync_probe()
    return Quiet(
        settle_seconds=round(time.monotonic() - started, 2),
        leftovers_ended=leftovers,
        checkpoint=done,
        fsync_before_p50_ms=round(statistics.median(before), 3),
        fsync_before_max_ms=round(max(before), 3),
        cpu_busy_share=round(share, 3),
        cpu_quiet=quiet,
        fsync_p50_ms=round(statistics.median(fsyncs), 3),
        fsync_max_ms=round(max(fsyncs), 3),
        busiest=users,
    )


# While a run measures: the disk under it.


def fsync_ms(fd: int) -> float:
    """Milliseconds one small overwrite and its fsync took."""
    os.pwrite(fd, b"\0" * FSYNC_PROBE_BYTES, 0)
    started = time.perf_counter()
    os.fsync(fd)
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class DiskSeen:
    """What the watch saw during one run."""

    samples: int
    fsync_p50_ms: float
    fsync_max_ms: float
    stalls: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def summary(times: list[float]) -> DiskSeen:
    if not times:
        return DiskSeen(0, 0.0, 0.0, 0)
    return DiskSeen(
        samples=len(times),
        fsync_p50_ms=round(statistics.median(times), 3),
        fsync_max_ms=round(max(times), 3),
        stalls=sum(1 for each in times if each > STALL_MS),
    )


class DiskWatch:
    """The fsync times sampled so far; ``first`` is set once there is one."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.first = threading.Event()
        self.stop = threading.Event()

    def sample_until_stopped(self, fd: int) -> None:
        while True:
            self.times.append(fsync_ms(fd))
            self.first.set()
            if self.stop.wait(WATCH_GAP_SECONDS):
                return

    def seen(self) -> DiskSeen:
        return summary(list(self.times))


@contextmanager
def watching() -> Iterator[DiskWatch]:
    """Sample the disk (where the SQLite-backed systems keep their files) on a thread
    of the harness until the block ends."""
    watch = DiskWatch()
    with tempfile.NamedTemporaryFile(prefix="taskq-bench-watch-") as probe:
        sampler = threading.Thread(
            target=watch.sample_until_stopped, args=(probe.fileno(),), daemon=True
        )
        sampler.start()
        try:
            yield watch
        finally:
            watch.stop.set()
            sampler.join()
