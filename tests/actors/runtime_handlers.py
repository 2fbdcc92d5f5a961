"""Handlers for the runtimes tests: module-level, so a worker process can import them."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def spin(payload: Mapping[str, Any]) -> None:
    """A busy loop that never yields; only killing its process stops it."""
    Path(payload["pid_file"]).write_text(str(os.getpid()))
    while True:
        pass


def square(payload: Mapping[str, Any]) -> dict[str, int]:
    return {"square": payload["n"] ** 2, "pid": os.getpid()}


def burn(payload: Mapping[str, Any]) -> float:
    """CPU-bound for about ``seconds``; for the benchmark of the process pool."""
    end = time.process_time() + float(payload["seconds"])
    while time.process_time() < end:
        pass
    return float(payload["seconds"])


def process_not_json(payload: Mapping[str, Any]) -> object:
    return {"when": datetime.datetime(2030, 1, 1)}


def thread_not_json(payload: Mapping[str, Any]) -> object:
    return {"when": datetime.datetime(2030, 1, 1)}


async def asyncio_not_json(payload: Mapping[str, Any]) -> object:
    await asyncio.sleep(0)
    return {"when": datetime.datetime(2030, 1, 1)}


async def trio_not_json(payload: Mapping[str, Any]) -> object:
    return {"when": datetime.datetime(2030, 1, 1)}


async def asyncio_echo(payload: Mapping[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"loop": type(asyncio.get_running_loop()).__name__, **payload}


def with_context(payload: Mapping[str, Any], context: object) -> None:
    return None
