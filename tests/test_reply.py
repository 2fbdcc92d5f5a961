"""A request's reply: one answer, or an ``Unavailable`` when its actor gives it up."""

from __future__ import annotations

from typing import Any

import outcome
import pytest
import trio
import trio.testing

from taskq.errors import Unavailable
from taskq.messages import Reply, answer, request


async def _answering(
    inbox: trio.MemoryReceiveChannel[Reply], result: outcome.Outcome[Any] | None
) -> None:
    """An actor that answers each request with ``result``, or closes it unanswered."""
    async for reply in inbox:
        if result is None:
            reply.close()
        else:
            answer(reply, result)


async def test_the_answer_comes_back_to_the_asker(nursery: trio.Nursery) -> None:
    send, inbox = trio.open_memory_channel[Reply](1)
    nursery.start_soon(_answering, inbox, outcome.Value(42))

    assert await request(send, lambda reply: reply) == 42


async def test_an_answered_error_is_raised_in_the_asker(nursery: trio.Nursery) -> None:
    send, inbox = trio.open_memory_channel[Reply](1)
    nursery.start_soon(_answering, inbox, outcome.Error(LookupError("nothing")))

    with pytest.raises(LookupError, match="nothing"):
        await request(send, lambda reply: reply)


async def test_a_reply_closed_unanswered_is_unavailable(nursery: trio.Nursery) -> None:
    send, inbox = trio.open_memory_channel[Reply](1)
    nursery.start_soon(_answering, inbox, None)

    with pytest.raises(Unavailable):
        await request(send, lambda reply: reply)


async def test_an_answer_given_before_the_asker_waits_is_kept() -> None:
    reply = Reply()
    answer(reply, outcome.Value("early"))

    assert (await reply.receive()).unwrap() == "early"


async def test_an_answer_after_the_asker_gave_up_is_dropped(nursery: trio.Nursery) -> None:
    send, inbox = trio.open_memory_channel[Reply](1)

    async def cancel_once_waiting(scope: trio.CancelScope) -> None:
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()

    with trio.CancelScope() as scope:
        nursery.start_soon(cancel_once_waiting, scope)
        await request(send, lambda reply: reply)
    reply = inbox.receive_nowait()

    assert reply.statistics().open_receive_channels == 0
    answer(reply, outcome.Value("late"))


async def test_a_waiting_asker_is_counted_as_awaiting() -> None:
    reply = Reply()

    assert reply.statistics().open_receive_channels == 1


async def test_a_reply_takes_one_answer_only() -> None:
    reply = Reply()
    answer(reply, outcome.Value(1))

    with pytest.raises(trio.ClosedResourceError):
        reply.send_nowait(outcome.Value(2))
