"""Timestamps at the hops of taskq's own code, for the diagnostic benchmarks.

``bench/latency_hops.py`` and ``bench/priority_hops.py`` note when a task passes
each hop by running a callback just before the function that marks it; they
lean on private names and measure, never change, what those functions do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def before_calls(owner: Any, name: str, before: Callable[..., None]) -> None:
    """Have ``owner.name`` call ``before`` with its own arguments first."""
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before(*args, **kwargs)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)
