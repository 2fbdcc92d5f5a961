"""The per-task histograms read exactly as prometheus_client's own ``Histogram`` would."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics

from taskq.metrics import TIME_BUCKETS_SECONDS, Metrics
from taskq.models import Priority, Task, TaskStatus

NOW = datetime(2026, 1, 1, 12, 0, 0)

# Every bound itself, values just either side of some, zero, and beyond the last bound.
OBSERVED = (
    *TIME_BUCKETS_SECONDS,
    0.0,
    0.000999,
    0.001001,
    0.07,
    2.5,
    299.999999,
    1800.000001,
    86400.0,
)


def task(name: str, started_after: float) -> Task:
    return Task(
        1,
        name,
        {},
        Priority.MEDIUM,
        None,
        TaskStatus.RUNNING,
        NOW,
        NOW,
        NOW + timedelta(seconds=started_after),
        None,
        1,
        None,
        None,
        1,
        1,
    )


def references(registry: CollectorRegistry) -> tuple[Histogram, Histogram]:
    """The wait and run histograms as they were declared with prometheus_client alone."""
    wait = Histogram(
        "taskq_task_wait_seconds",
        "From a task being due (created or scheduled time) to its claim",
        ["name"],
        buckets=TIME_BUCKETS_SECONDS,
        registry=registry,
    )
    run = Histogram(
        "taskq_task_run_seconds",
        "From a task's claim to its written outcome",
        ["name"],
        buckets=TIME_BUCKETS_SECONDS,
        registry=registry,
    )
    return wait, run


def family(text: str, name: str) -> list[str]:
    """The lines of one metric family, with the creation times (which differ) blanked."""
    lines = [line for line in text.splitlines() if re.match(rf"(# \w+ )?{name}[_ ]", line)]
    return [re.sub(r"^(\S+_created\{.*\}) .*$", r"\1 <time>", line) for line in lines]


def exposed(metrics: Metrics, expected: CollectorRegistry) -> Iterator[tuple[list[str], list[str]]]:
    ours, theirs = generate_latest(metrics.registry).decode(), generate_latest(expected).decode()
    for name in ("taskq_task_wait_seconds", "taskq_task_run_seconds"):
        yield family(ours, name), family(theirs, name)


def feed(metrics: Metrics, expected: CollectorRegistry) -> None:
    wait, run = references(expected)
    for index, seconds in enumerate(OBSERVED):
        name = ("mail", "resize", "taskq.echo")[index % 3]
        claimed = task(name, seconds)
        finished_at = NOW + timedelta(seconds=3 * seconds)
        metrics.tasks_claimed([claimed])
        metrics.tasks_ran([claimed], finished_at)
        assert claimed.started_at is not None
        wait.labels(name).observe((claimed.started_at - NOW).total_seconds())
        run.labels(name).observe((finished_at - claimed.started_at).total_seconds())


def test_the_task_histograms_expose_what_the_library_would() -> None:
    metrics, expected = Metrics(), CollectorRegistry()
    feed(metrics, expected)
    for ours, theirs in exposed(metrics, expected):
        assert any("_bucket{" in line for line in theirs)
        assert ours == theirs


def test_the_task_histograms_are_empty_families_before_any_task() -> None:
    metrics, expected = Metrics(), CollectorRegistry()
    references(expected)
    for ours, theirs in exposed(metrics, expected):
        assert ours == theirs
        assert len(ours) == 2


def test_a_name_is_created_when_first_observed() -> None:
    metrics = Metrics()
    before = time.time()
    metrics.tasks_claimed([task("mail", 1.0)])
    (created,) = [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("taskq_task_wait_seconds_created{")
    ]
    assert before <= float(created.split()[-1]) <= time.time()


@pytest.fixture
def without_created_series() -> Iterator[None]:
    prometheus_metrics.disable_created_metrics()
    try:
        yield
    finally:
        prometheus_metrics.enable_created_metrics()


@pytest.mark.usefixtures("without_created_series")
def test_disabling_the_created_series_drops_them_here_too() -> None:
    metrics, expected = Metrics(), CollectorRegistry()
    feed(metrics, expected)
    for ours, theirs in exposed(metrics, expected):
        assert not any("_created" in line for line in theirs)
        assert ours == theirs


def test_a_claim_of_many_tasks_observes_each_task_as_the_library_would() -> None:
    """Runs of tasks sharing name and times are worked out once and observed per task."""
    metrics, expected = Metrics(), CollectorRegistry()
    wait, run = references(expected)
    claimed = [
        task(name, seconds)
        for seconds in (0.002, 0.002, 0.7, 0.7)
        for name in ("mail", "mail", "resize", "mail")
    ]
    finished_at = NOW + timedelta(seconds=2)
    metrics.tasks_claimed(claimed)
    metrics.tasks_ran(claimed, finished_at)
    for each in claimed:
        assert each.started_at is not None
        wait.labels(each.name).observe((each.started_at - NOW).total_seconds())
        run.labels(each.name).observe((finished_at - each.started_at).total_seconds())
    for ours, theirs in exposed(metrics, expected):
        assert any('_count{name="mail"} 12.0' in line for line in theirs)
        assert ours == theirs
