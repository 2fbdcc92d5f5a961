"""Prometheus metrics of one running system, in a registry of its own.

Counters and histograms are fed by the events hub (from committed writer
batches) and by the HTTP layer; the gauges (queue depth, workers) are read
from the database when scraped, so they are exact rather than tracked. Each
system has its own ``CollectorRegistry``: several systems may share a process
(tests do), and the global default registry would mix them.

The two histograms observed once per task (wait and run) are ``TaskHistogram``
collectors rather than prometheus_client ``Histogram``s: the library's
``observe`` takes a lock for the sum and another for the bucket, a cost paid
twice per task on the actors' thread although only that thread ever observes.
They are scraped as the same series the library would expose.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
)
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from taskq.config import METRICS_TASK_NAMES_MAX
from taskq.models import Priority, Task, TaskCounts, TaskStatus, Worker, WorkerStatus

# Task names beyond METRICS_TASK_NAMES_MAX share this label: a client inventing
# names must not grow the registry without bound.
OTHER_NAMES = "_other"

TIME_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
COMMIT_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
HTTP_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


# How prometheus_client spells a bucket's bound in its ``le`` label (the library leaves it untyped).
_bucket_label: Callable[[float], str] = floatToGoString


class Observations:
    """One label value's histogram: observations per bucket (not cumulative) and their sum."""

    __slots__ = ("_bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Into the first bucket whose bound is at least ``value``, as the library does."""
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.total += value


class TaskHistogram(Collector):
    """A histogram by task name, fed on the actors' thread and read when scraped.

    Its samples are those of a prometheus_client ``Histogram`` with the same name,
    help, ``name`` label and buckets: buckets cumulative, ``_count``, ``_sum`` and,
    unless the library's created series are disabled, ``_created``.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*(float(bound) for bound in buckets), math.inf)
        self._les = [_bucket_label(bound) for bound in self._bounds]
        self._children: dict[str, Observations] = {}
        registry.register(self)

    def labels(self, name: str) -> Observations:
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = Observations(self._bounds)
        return child

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=["name"])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=["name"])
        for name, child in self._children.items():
            cumulative = itertools.accumulate(child.counts)
            family.add_metric([name], list(zip(self._les, cumulative, strict=True)), child.total)
            if prometheus_metrics._use_created:
                family.samples.append(
                    Sample(f"{self._name}_created", {"name": name}, child.created)
                )
        yield family


@dataclass(frozen=True, slots=True)
class _PerName:
    created: Counter
    completed: Counter
    failed: Counter
    run: Observations
    wait: Observations


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._per_name: dict[str, _PerName] = {}
        # Routes are the app's rules (or "unmatched"), so these children stay few.
        self._per_request_kind: dict[tuple[str, str, int], Histogram] = {}
        registry = self.registry
        self.tasks_created = Counter(
            "taskq_tasks_created", "Tasks created, by name", ["name"], registry=registry
        )
        self.tasks_finished = Counter(
            "taskq_tasks_finished",
            "Task executions whose outcome was written, by name and outcome",
            ["name", "outcome"],
            registry=registry,
        )
        self.run_seconds = TaskHistogram(
            "taskq_task_run_seconds",
            "From a task's claim to its written outcome",
            TIME_BUCKETS_SECONDS,
            registry,
        )
        self.wait_seconds = TaskHistogram(
            "taskq_task_wait_seconds",
            "From a task being due (created or scheduled time) to its claim",
            TIME_BUCKETS_SECONDS,
            registry,
        )
        self.batch_commands = Histogram(
            "taskq_writer_batch_commands",
            "Commands applied per writer transaction",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "taskq_writer_commit_seconds",
            "Time to apply and commit one writer batch",
            buckets=COMMIT_BUCKETS_SECONDS,
            registry=registry,
        )
        self.http_seconds = Histogram(
            "taskq_http_request_seconds",
            "HTTP request durations, by method, route and status",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS_SECONDS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "taskq_tasks", "Tasks by status and priority", ["status", "priority"], registry=registry
        )
        self.workers = Gauge("taskq_workers", "Workers by status", ["status"], registry=registry)

    def _of(self, name: str) -> _PerName:
        """The children of one task name, made once: ``labels()`` is too slow per change."""
        found = self._per_name.get(name)
        if found is None:
            label = name if len(self._per_name) < METRICS_TASK_NAMES_MAX else OTHER_NAMES
            found = self._per_name.get(label) or _PerName(
                created=self.tasks_created.labels(label),
                completed=self.tasks_finished.labels(label, "completed"),
                failed=self.tasks_finished.labels(label, "failed"),
                run=self.run_seconds.labels(label),
                wait=self.wait_seconds.labels(label),
            )
            self._per_name[label] = found
        return found

    def add_created(self, names: Mapping[str, int]) -> None:
        """``names``: how many tasks of each name one batch created (one ``inc`` each)."""
        for name, count in names.items():
            self._of(name).created.inc(count)

    def tasks_claimed(self, tasks: Iterable[Task]) -> None:
        """One wait observation per task, from its due time to its claim.

        The tasks of one claim share their start, and those created together
        their due time: a run of tasks with the same name and times is worked out
        once, and observed once per task, in order.
        """
        run: tuple[str, datetime, datetime | None, datetime] | None = None
        seconds = 0.0
        wait = None
        for task in tasks:
            if task.started_at is None:
                continue
            key = (task.name, task.created_at, task.scheduled_at, task.started_at)
            if key != run or wait is None:
                run = key
                due = max(task.created_at, task.scheduled_at or task.created_at)
                seconds = max(0.0, (task.started_at - due).total_seconds())
                wait = self._of(task.name).wait
            wait.observe(seconds)

    def tasks_ran(self, claimed: Iterable[Task], at: datetime) -> None:
        """One run observation per task: ``claimed`` as their claims left them, their
        outcomes written ``at``. Tasks of one name and claim share the number."""
        run: tuple[str, datetime] | None = None
        seconds = 0.0
        observations = None
        for task in claimed:
            if task.started_at is None:
                continue
            key = (task.name, task.started_at)
            if key != run or observations is None:
                run = key
                seconds = max(0.0, (at - task.started_at).total_seconds())
                observations = self._of(task.name).run
            observations.observe(seconds)

    def add_finished(self, outcomes: Mapping[tuple[str, bool], int]) -> None:
        """``outcomes``: how many executions of each (name, succeeded) one batch wrote."""
        for (name, succeeded), count in outcomes.items():
            children = self._of(name)
            (children.completed if succeeded else children.failed).inc(count)

    def batch_committed(self, commands: int, seconds: float) -> None:
        self.batch_commands.observe(commands)
        self.commit_seconds.observe(seconds)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        kind = (method, route, status)
        child = self._per_request_kind.get(kind)
        if child is None:
            child = self._per_request_kind[kind] = self.http_seconds.labels(
                method, route, str(status)
            )
        child.observe(seconds)

    def render(self, counts: TaskCounts, workers: Sequence[Worker]) -> bytes:
        """The text exposition format, with the gauges set from ``counts`` and ``workers``."""
        for status in TaskStatus:
            for priority in Priority:
                depth = counts.get((status, priority), 0)
                self.queue_depth.labels(str(status), str(int(priority))).set(depth)
        for worker_status in WorkerStatus:
            held = sum(1 for worker in workers if worker.status == worker_status)
            self.workers.labels(str(worker_status)).set(held)
        return generate_latest(self.registry)
