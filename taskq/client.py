"""``taskq.Client``: a small synchronous client of the HTTP API, over httpx.

Tasks and workers come back as the API's JSON objects (dicts), so a field the
server adds reaches the caller without a client release. Every refusal raises
``ClientError`` with the server's status and ``detail``; a server that cannot
be reached raises ``Unreachable``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 10.0
# A task in one of these will not change again by itself.
FINAL_STATUSES = frozenset({"completed", "failed"})

# What ``Client.events`` yields each time the stream is (re)connected.
STREAM_OPEN = "stream.open"

Json = dict[str, Any]


class ClientError(Exception):
    """The server refused the request."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Unreachable(Exception):
    """No answer from the server (refused, timed out, name not resolved)."""


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``token``: the API token the server requires, if it requires one."""
        self.url = url.rstrip("/")
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- tasks ---

    def submit(
        self,
        name: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        scheduled_at: datetime | str | None = None,
    ) -> Json:
        body: Json = {"name": name, "payload": dict(payload or {})}
        if priority is not None:
            body["priority"] = priority
        if scheduled_at is not None:
            when = scheduled_at.isoformat() if isinstance(scheduled_at, datetime) else scheduled_at
            body["scheduled_at"] = when
        task: Json = self._call("POST", "/api/tasks/", json=body)
        return task

    def tasks(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        priority: int | None = None,
        skip: int = 0,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[Json]:
        params: dict[str, Any] = {"skip": skip, "limit": limit}
        params |= {"order": "desc"} if newest_first else {}
        filters = {"status": status, "name": name, "priority": priority}
        params |= {key: value for key, value in filters.items() if value is not None}
        found: list[Json] = self._call("GET", "/api/tasks/", params=params)
        return found

    def task(self, task_id: int) -> Json:
        task: Json = self._call("GET", f"/api/tasks/{task_id}")
        return task

    def pause(self, task_id: int) -> Json:
        task: Json = self._call("PATCH", f"/api/tasks/{task_id}/pause")
        return task

    def resume(self, task_id: int) -> Json:
        task: Json = self._call("PATCH", f"/api/tasks/{task_id}/resume")
        return task

    def retry(self, task_id: int) -> Json:
        """Put a failed task back in the queue."""
        task: Json = self._call("POST", f"/api/tasks/{task_id}/retry")
        return task

    def delete(self, task_id: int) -> None:
        self._call("DELETE", f"/api/tasks/{task_id}")

    def stats(self) -> Json:
        stats: Json = self._call("GET", "/api/stats")
        return stats

    # --- workers ---

    def workers(self) -> list[Json]:
        found: list[Json] = self._call("GET", "/api/workers/")
        return found

    # --- the change stream ---

    def events(self, after: int | None = None) -> Iterator[Json]:
        """Committed changes as they happen, each a dict with its ``id`` and ``kind``.

        Each (re)connection first yields ``{"kind": "stream.open"}``: from then
        on no change is missed. It reconnects by itself (resuming after the
        last id seen) when the server ends the stream; a change of kind
        ``stream.reset`` means some were missed. It stops only by raising
        ``Unreachable`` (or ``ClientError``).
        """
        while True:
            for change in self._stream(after):
                if change.get("id") is not None:
                    after = change["id"]
                yield change

    def wait(
        self,
        task_id: int,
        events: Iterator[Json],
        on_change: Callable[[Json], None] | None = None,
    ) -> Json:
        """The task once it is final (completed or failed), read after each of its changes.

        ``events`` must have been opened before the task could finish (before
        submitting it, say), so that no change is missed in between;
        ``on_change`` sees every state read on the way.
        """
        task = self.task(task_id)
        while task["status"] not in FINAL_STATUSES:
            if on_change is not None:
                on_change(task)
            change = next(events)
            if change.get("task_id") in (task_id, None):
                task = self.task(task_id)
        return task

    def _stream(self, after: int | None) -> Iterator[Json]:
        headers = {} if after is None else {"Last-Event-ID": str(after)}
        try:
            with self._http.stream("GET", "/api/events", headers=headers, timeout=None) as answer:
                if answer.status_code != 200:
                    answer.read()
                    raise ClientError(answer.status_code, _detail(answer))
                yield {"kind": STREAM_OPEN}
                yield from _parse_events(answer.iter_bytes())
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach taskq at {self.url}: {exc}") from exc

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach taskq at {self.url}: {exc}") from exc
        if answer.status_code >= 400:
            raise ClientError(answer.status_code, _detail(answer))
        return None if answer.status_code == 204 else answer.json()


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return answer.text or answer.reason_phrase


def _parse_events(chunks: Iterator[bytes]) -> Iterator[Json]:
    """Server-Sent Events: the ``data:`` lines of each blank-line-terminated block.

    Split here rather than with a line reader, which may hold back the blank
    line that ends an event until more bytes arrive.
    """
    pending = b""
    for chunk in chunks:
        pending += chunk.replace(b"\r\n", b"\n")
        *blocks, pending = pending.split(b"\n\n")
        for block in blocks:
            data = [
                line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
            ]
            if data:
                yield json.loads(b"\n".join(data))
