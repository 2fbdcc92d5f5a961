"""Handlers of ``bench/pause_latency.py`` that run in threads and worker processes.

A module of its own: a worker process imports its handler by module and name,
which a script's ``__main__`` cannot offer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


def spin(payload: Mapping[str, Any]) -> None:
    """Busy for up to ``seconds``, never yielding: stopped only by killing its process."""
    end = time.monotonic() + float(payload["seconds"])
    while time.monotonic() < end:
        pass


def burn(payload: Mapping[str, Any]) -> int:
    """Pure-Python CPU work: holds the GIL the whole time."""
    total = 0
    for n in range(int(payload["loops"])):
        total += n * n % 7
    return total


def nothing(payload: Mapping[str, Any]) -> None:
    return None
