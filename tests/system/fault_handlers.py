"""Misbehaving handlers for the fault tests, loaded into the real process with ``--tasks``.

Each kind of misbehaviour a handler can show: failing until a later attempt,
escaping with a ``BaseException``, hanging (on Trio, in a thread, in a worker
process), leaking memory in a worker process until it is stopped, and killing
its own worker process. The process ones are module-level functions, as the
process runtime requires; they write their process id to ``payload["pid_file"]``
so a test can see that process die.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from taskq import TaskContext, task

LEAK_CHUNK_BYTES = 1 << 20


class Escape(BaseException):
    """Not an ``Exception``: what a handler's own ``except Exception`` never stops."""


@task("tests.flaky")
async def flaky(payload: Mapping[str, Any], context: TaskContext) -> dict[str, int]:
    """Fails every claim before the ``succeed_at``-th; needs that many attempts at most."""
    if context.attempt < payload["succeed_at"]:
        raise RuntimeError(f"flaky: attempt {context.attempt}")
    return {"attempt": context.attempt}


@task("tests.escape")
async def escape(payload: Mapping[str, Any]) -> None:
    raise Escape("out of the handler")


@task("tests.hang")
async def hang(payload: Mapping[str, Any]) -> None:
    await trio.sleep_forever()


@task("tests.hang_thread", runtime="thread")
def hang_thread(payload: Mapping[str, Any]) -> None:
    """Blocks its thread for ``seconds``: nothing can stop a thread, only abandon it."""
    threading.Event().wait(float(payload["seconds"]))


def _note_pid(payload: Mapping[str, Any]) -> None:
    Path(payload["pid_file"]).write_text(str(os.getpid()))


@task("tests.spin", runtime="process")
def spin(payload: Mapping[str, Any]) -> None:
    _note_pid(payload)
    while True:
        pass


@task("tests.leak", runtime="process")
def leak(payload: Mapping[str, Any]) -> None:
    """Grows by a MiB at a time up to ``mib``, then spins holding it all."""
    _note_pid(payload)
    kept = [bytearray(LEAK_CHUNK_BYTES) for _ in range(int(payload["mib"]))]
    while kept:
        pass


@task("tests.suicide", runtime="process")
def suicide(payload: Mapping[str, Any]) -> None:
    _note_pid(payload)
    os.kill(os.getpid(), signal.SIGKILL)
