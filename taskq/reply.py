"""The reply of a request: one answer, from the actor that handles it to the task that asked.

A one-slot memory channel did this job, but one is made for every request
(every HTTP call, every claim, every promotion), and a channel pair with its
shared state and two closes costs about 20 us more per request than ``Reply``.
``Reply`` keeps the sending half's interface (``send_nowait``, ``close``,
``with``, ``statistics``), so an actor answers it as it would a channel, and a
channel still works wherever a reply is expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import outcome
import trio


@dataclass(frozen=True, slots=True)
class ReplyStatistics:
    """As a channel's statistics say it: 0 once the asker has stopped waiting, so an
    actor can skip work that no one awaits any more."""

    open_receive_channels: int


class Reply:
    """Where the one answer to one request goes: the actor answers it
    (``send_nowait``, then ``close``), the asker waits in ``receive``."""

    __slots__ = ("_asker", "_closed", "_gone", "_result")

    def __init__(self) -> None:
        self._result: outcome.Outcome[Any] | None = None
        # The task waiting in ``receive``, while it waits.
        self._asker: trio.lowlevel.Task | None = None
        # No answer may come any more: answered, or its actor gave it up.
        self._closed = False
        # The asker no longer waits (cancelled, or done).
        self._gone = False

    def send_nowait(self, result: outcome.Outcome[Any]) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this request was already answered or given up")
        if self._gone:
            raise trio.BrokenResourceError("the asker no longer waits")
        if self._result is not None:
            raise trio.WouldBlock
        self._result = result
        self._wake()

    def close(self) -> None:
        """No answer will come: the asker, if it still waits, gets ``EndOfChannel``."""
        self._closed = True
        self._wake()

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> ReplyStatistics:
        return ReplyStatistics(open_receive_channels=int(not self._gone))

    async def receive(self) -> outcome.Outcome[Any]:
        """The answer; ``EndOfChannel`` if the reply was closed without one."""
        if self._result is None and not self._closed:
            self._asker = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        else:
            await trio.lowlevel.checkpoint()
        if self._result is None:
            raise trio.EndOfChannel
        return self._result

    def stop_waiting(self) -> None:
        """The asker is done (answered or cancelled): later answers are dropped."""
        self._gone = True

    def _abort(self, _raise_cancel: Callable[[], object]) -> trio.lowlevel.Abort:
        self._asker = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        if self._asker is not None:
            trio.lowlevel.reschedule(self._asker)
            self._asker = None
