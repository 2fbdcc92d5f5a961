"""What operators read beside the queue: metrics, actor liveness and the change stream."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from taskq.config import EVENTS_SUBSCRIBER_BUFFER
from taskq.errors import Unavailable
from taskq.messages import HubMessage, Subscribe, Subscription, request
from taskq.metrics import Metrics
from taskq.supervision import Liveness


@dataclass(frozen=True, slots=True)
class Monitor:
    metrics: Metrics = field(default_factory=Metrics)
    liveness: Liveness = field(default_factory=Liveness)
    # The events hub's inbox; None where no hub runs (an app built on a bare queue).
    hub: trio.MemorySendChannel[HubMessage] | None = None

    async def subscribe(
        self, after: int | None = None, *, buffer: int = EVENTS_SUBSCRIBER_BUFFER
    ) -> Subscription:
        """Changes committed from now on, preceded by those after id ``after`` still held.

        Read ``Subscription.changes`` promptly: a subscriber ``buffer`` changes
        behind is dropped, and its stream ends.
        """
        if self.hub is None:
            raise Unavailable("the event stream is not running")
        hub = self.hub
        subscription: Subscription = await request(
            hub, lambda reply: Subscribe(after, buffer, reply)
        )
        return subscription
