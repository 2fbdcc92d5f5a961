"""Handlers for the system tests, loaded into the real process with ``--tasks``.

Each records the start of every execution as one line ``<task id> <attempt>``
appended to the file named by ``payload["log"]``, so a test can count how many
times a task ran even across a SIGKILL. ``tests.gated`` then blocks until the
file ``payload["gate"]`` exists: a test holds tasks ``running`` for as long as
it likes and releases them by creating the file (before a restart, say).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from taskq import TaskContext, task

GATE_POLL_SECONDS = 0.02


def _record(payload: Mapping[str, Any], context: TaskContext) -> None:
    # O_APPEND writes of one short line do not interleave between workers.
    with Path(payload["log"]).open("a") as log:
        log.write(f"{context.task_id} {context.attempt}\n")


@task("tests.record")
async def record(payload: Mapping[str, Any], context: TaskContext) -> dict[str, int]:
    _record(payload, context)
    return {"attempt": context.attempt}


@task("tests.gated")
async def gated(payload: Mapping[str, Any], context: TaskContext) -> dict[str, int]:
    _record(payload, context)
    gate = trio.Path(payload["gate"])
    while not await gate.exists():  # noqa: ASYNC110 - a file is the only signal across processes
        await trio.sleep(GATE_POLL_SECONDS)
    return {"attempt": context.attempt}
