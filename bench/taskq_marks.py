"""The handler the taskq server runs in the priority scenario: it stamps its own start.

A module of its own, because the server (``python -m taskq --tasks bench.taskq_marks``)
imports its handlers by module name. The stamp is the handler's first line, in the
server's process, appended to the file named by ``BENCH_MARKS_FILE``; server
timestamps could not serve, since a task claimed in the commit that stores it has
``started_at`` equal to ``created_at``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from typing import Any

import taskq

MARKS_FILE_ENV = "BENCH_MARKS_FILE"


@functools.cache
def _marks_fd() -> int:
    return os.open(os.environ[MARKS_FILE_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


@taskq.task("bench.mark")
async def mark(payload: Mapping[str, Any]) -> None:
    os.write(_marks_fd(), f"{payload['n']} {time.time():.6f}\n".encode())
