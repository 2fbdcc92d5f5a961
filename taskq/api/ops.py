"""The operator routes: liveness, readiness, Prometheus metrics, counts and the change stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, Request, Response, request
from quart_schema import document_headers, validate_querystring
from quart_trio import QuartTrio
from werkzeug.wrappers.response import Response as WerkzeugResponse

from taskq.api.errors import parse_id
from taskq.api.openapi import responds
from taskq.api.schemas import (
    EventsHeaders,
    EventsQuery,
    StatsOut,
    StatusOut,
    change_json,
    stats_json,
)
from taskq.config import EVENTS_KEEPALIVE_SECONDS, READY_TIMEOUT_SECONDS
from taskq.errors import Unavailable
from taskq.messages import Subscription
from taskq.metrics import Metrics
from taskq.models import Change
from taskq.monitor import Monitor
from taskq.queue import Queue

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
EVENT_STREAM = "text/event-stream"
# The browser's EventSource waits this long (ms) before reconnecting.
RECONNECT_MS = 1000
# At most this many changes are written to a stream in one chunk.
EVENTS_PER_WRITE = 256
# One event as an EventSource reads it. Its ``data`` is a change as JSON (or, without an
# ``id``, ``{"kind": "stream.reset"}``); the stream's opening ``retry`` carries none.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}


def blueprint(queue: Queue, monitor: Monitor) -> Blueprint:
    ops = Blueprint("ops", __name__)

    @ops.get("/healthz")
    @responds(200, StatusOut)
    async def healthz() -> tuple[dict[str, Any], int]:
        """The process is alive.

        Always 200 while the process serves HTTP; readiness is ``/readyz``.
        """
        return {"status": "ok"}, 200

    @ops.get("/readyz")
    @responds(200, StatusOut, errors=(503,))
    async def readyz() -> tuple[dict[str, Any], int]:
        """The database answers and every actor runs."""
        down = monitor.liveness.down_names()
        if down:
            return {"detail": f"actors not running: {', '.join(down)}"}, 503
        with trio.move_on_after(READY_TIMEOUT_SECONDS):
            try:
                await queue.list_workers()
            except Unavailable as exc:
                return {"detail": f"database not reachable: {exc.detail}"}, 503
            return {"status": "ready"}, 200
        return {"detail": f"database did not answer within {READY_TIMEOUT_SECONDS:g} s"}, 503

    @ops.get("/metrics")
    @responds(200, media_type=PROMETHEUS_TEXT, description="Prometheus text format")
    async def metrics() -> tuple[bytes, int, dict[str, str]]:
        """Prometheus metrics of this process."""
        counts = await queue.count_tasks()
        workers = await queue.list_workers()
        return monitor.metrics.render(counts, workers), 200, {"Content-Type": PROMETHEUS_TEXT}

    @ops.get("/api/stats")
    @responds(200, StatsOut, errors=(503,))
    async def stats() -> tuple[dict[str, Any], int]:
        """Task counts by status and by priority."""
        return stats_json(await queue.count_tasks()), 200

    @ops.get("/api/events")
    @validate_querystring(EventsQuery)
    @document_headers(EventsHeaders)
    @responds(
        200,
        media_type=EVENT_STREAM,
        description="Server-Sent Events: one JSON change per event, its id the change number",
        errors=(422, 503),
        schema=EVENT_SCHEMA,
    )
    async def events(query_args: EventsQuery) -> Response:
        """Committed task and worker changes, live.

        Resumes after the ``Last-Event-ID`` header (or ``after``) while those
        changes are still held; otherwise the stream starts with a
        ``stream.reset`` event: re-read the state you show.
        """
        header = request.headers.get("Last-Event-ID")
        after = parse_id(header, "Last-Event-ID") if header else query_args.after
        subscription = await monitor.subscribe(after)
        response = Response(
            _stream(subscription),
            200,
            {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None
        return response

    return ops


async def _stream(subscription: Subscription) -> AsyncIterator[bytes]:
    """Ends when the hub drops the subscriber; the client reconnects with its last id."""
    changes = subscription.changes
    with changes:
        yield f"retry: {RECONNECT_MS}\n\n".encode()
        if not subscription.complete:
            yield _frame(None, {"kind": "stream.reset"})
        while True:
            with trio.move_on_after(EVENTS_KEEPALIVE_SECONDS) as idle:
                try:
                    first = await changes.receive()
                except trio.EndOfChannel:
                    return
            if idle.cancelled_caught:
                yield b": keep-alive\n\n"
                continue
            yield b"".join(
                _frame(change.id, change_json(change)) for change in _more(changes, first)
            )


def _more(changes: trio.MemoryReceiveChannel[Change], first: Change) -> list[Change]:
    """``first`` and whatever else already waits, up to one write's worth."""
    batch = [first]
    while len(batch) < EVENTS_PER_WRITE:
        try:
            batch.append(changes.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


def _frame(event_id: int | None, data: dict[str, Any]) -> bytes:
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class TimedApp(QuartTrio):
    """Quart-Trio observing every request's duration, labelled by its route pattern (not
    its path) and its status, whatever answered it (route, error handler or hook).

    Timed by the app around its own handling, where the request is at hand: a pair of
    before/after hooks would cost two more awaits and the request globals per request.
    """

    def __init__(self, name: str, metrics: Metrics, **options: Any) -> None:
        super().__init__(name, **options)
        self.metrics = metrics

    async def handle_request(self, asked: Request) -> Response | WerkzeugResponse:
        started = time.perf_counter()
        response = await super().handle_request(asked)
        rule = asked.url_rule.rule if asked.url_rule is not None else "unmatched"
        self.metrics.http_request(
            asked.method, rule, response.status_code, time.perf_counter() - started
        )
        return response
