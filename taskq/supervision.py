"""Restart policy as data, and the one loop that applies it to any actor."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from taskq import config

log = logging.getLogger(__name__)


class SystemFailure(Exception):
    """An actor kept crashing: the whole system stops rather than limp on."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = config.RESTART_MAX
    window_seconds: float = config.RESTART_WINDOW_SECONDS
    backoff_first_seconds: float = config.RESTART_BACKOFF_FIRST_SECONDS
    backoff_max_seconds: float = config.RESTART_BACKOFF_MAX_SECONDS


class Liveness:
    """Which supervised actors are running right now; ``/readyz`` reads it.

    An actor counts as down from its crash until its restart, and after it
    has returned (the system is stopping).
    """

    def __init__(self) -> None:
        self._down: set[str] = set()

    def up(self, name: str) -> None:
        self._down.discard(name)

    def down(self, name: str) -> None:
        self._down.add(name)

    def down_names(self) -> list[str]:
        return sorted(self._down)


async def supervise(
    name: str,
    actor: Callable[[], Awaitable[None]],
    policy: RestartPolicy,
    *,
    before_restart: Callable[[], None] | None = None,
    liveness: Liveness | None = None,
) -> None:
    """Run ``actor`` until it returns; restart it when it raises, with backoff.

    More than ``policy.max_restarts`` crashes within ``policy.window_seconds``
    raise ``SystemFailure``, which takes the supervisor's nursery (and so the
    process) down with the actor's last error attached.
    """
    crashes: deque[float] = deque()
    backoff = policy.backoff_first_seconds
    liveness = liveness or Liveness()
    while True:
        liveness.up(name)
        try:
            await actor()
            liveness.down(name)
            return
        except Exception as exc:
            liveness.down(name)
            now = trio.current_time()
            while crashes and now - crashes[0] > policy.window_seconds:
                crashes.popleft()
            crashes.append(now)
            if len(crashes) > policy.max_restarts:
                raise SystemFailure(
                    f"actor {name} crashed {len(crashes)} times within "
                    f"{policy.window_seconds:g} s; stopping"
                ) from exc
            log.exception("actor %s crashed; restarting in %.2f s", name, backoff)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, policy.backoff_max_seconds)
        if before_restart is not None:
            before_restart()
