"""``Task``'s quicker ``__init__`` is the one ``dataclass`` would write, and Task stays frozen."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import datetime

import pytest

from taskq.models import Priority, Task, TaskStatus

NOW = datetime(2026, 1, 1)


def stock() -> type:
    """Task's fields in a dataclass with the ``__init__`` that ``dataclass`` writes."""
    return dataclasses.make_dataclass(
        "Task",
        [
            (each.name, each.type, dataclasses.field(default=each.default))
            if each.default is not dataclasses.MISSING
            else (each.name, each.type)
            for each in dataclasses.fields(Task)
        ],
        frozen=True,
        slots=True,
    )


def test_the_signature_is_the_dataclass_one() -> None:
    assert inspect.signature(Task) == inspect.signature(stock())


def test_every_field_gets_its_argument_or_its_default() -> None:
    values = (7, "job", {"n": 1}, Priority.HIGH, None, TaskStatus.PENDING, NOW, NOW, None, None)
    values += (None, None, None, 0)
    task, expected = (
        Task(*values, attempts=2, timeout=1.5),
        stock()(*values, attempts=2, timeout=1.5),
    )
    assert dataclasses.astuple(task) == dataclasses.astuple(expected)
    assert (task.attempts, task.max_attempts, task.timeout, task.progress) == (2, 1, 1.5, None)


def test_a_task_stays_frozen_and_comparable() -> None:
    task = Task(1, "job", {}, Priority.LOW, None, TaskStatus.PENDING, NOW, NOW, *[None] * 5, 0)
    with pytest.raises(TypeError):
        Task(1, "job")  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.status = TaskStatus.RUNNING  # type: ignore[misc]
    moved = dataclasses.replace(task, status=TaskStatus.RUNNING)
    assert (moved.status, task.status) == (TaskStatus.RUNNING, TaskStatus.PENDING)
    assert moved != task
    assert dataclasses.replace(moved, status=TaskStatus.PENDING) == task
