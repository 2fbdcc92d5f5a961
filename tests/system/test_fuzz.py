"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis).

The document is the app's own ``/openapi.json`` (read in-process when the
module is collected: schemathesis makes one test per operation from it). A
real ``python -m taskq`` answers (per backend, shared by the module's tests),
so every layer a client meets (hypercorn, Quart-Trio, validation, the actors,
the database) is under test. Two tests:

- every operation on its own, with data that fits the document (positive)
  and data that does not (negative), from schemathesis' coverage phase (the
  boundaries and each way to break the schema) and its fuzzing phase (random);
- sequences of calls that follow the document's links: create a task, then
  pause, resume, update, retry or delete that task; register a worker, then
  read it, heartbeat it or set its status.

Each response must be no 5xx, answer a status the document lists for the
operation, with the content type and the body schema it documents, and a
405 must list the allowed methods. After a delete, the resource is gone.

The number of examples is bounded for CI; ``TASKQ_FUZZ_EXAMPLES`` raises it
for a longer local run, ``TASKQ_FUZZ_SEED`` picks another seed (the default
one keeps CI reproducible).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
import trio
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from taskq.api.app import create_app
from taskq.queue import Queue
from tests.conftest import BACKENDS, empty_postgresql
from tests.system.conftest import Launcher, Taskq

EXAMPLES = int(os.environ.get("TASKQ_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("TASKQ_FUZZ_SEED", "20261127"))
# A stateful scenario is a sequence of this many calls at most.
STEPS = 8
# Per request; an event stream is cut after this long (it never ends by itself).
REQUEST_TIMEOUT_SECONDS = 10.0
EVENTS_READ_SECONDS = 0.25
KEEP_ALIVE_TRIES = 40
UNREAD_BODIES = [
    ("PUT", "/healthz"),
    ("GET", "/nowhere"),
    ("DELETE", "/api/tasks/999999"),
    ("PATCH", "/api/workers/999999/heartbeat"),
]
KEEP_ALIVE_TIMEOUT_SECONDS = 2.0
FAR_FUTURE = "2999-01-01T00:00:00"

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "use_after_free",
)


def fuzz_config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "request-timeout": REQUEST_TIMEOUT_SECONDS,
            "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": False},
                "stateful": {
                    "max-steps": STEPS,
                    # The document's own links, not links guessed from names.
                    "inference": {"algorithms": []},
                },
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Taskq]:
    folder = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        db_url = f"sqlite:///{folder / 'taskq.db'}"
    else:
        db_url = request.getfixturevalue("postgresql_url")
        empty_postgresql(db_url)
    launcher = Launcher(folder, db_url)
    try:
        yield launcher("--db", db_url, "--port", "0", defaults=False)
    finally:
        launcher.close()


def openapi_document() -> dict[str, Any]:
    """What ``/openapi.json`` serves: the document needs the routes, not a running queue."""
    writer, _ = trio.open_memory_channel[Any](0)
    supervisor, _ = trio.open_memory_channel[Any](0)
    app = create_app(Queue(writer, supervisor))

    async def read() -> dict[str, Any]:
        response = await app.test_client().get("/openapi.json")
        assert response.status_code == 200
        document: dict[str, Any] = await response.get_json()
        return document

    return trio.run(read)


schema = schemathesis.openapi.from_dict(openapi_document(), config=fuzz_config())


def call_kwargs(server: Taskq, case: Case) -> dict[str, Any]:
    if case.operation.path == "/api/events":
        return {"base_url": server.url, "timeout": EVENTS_READ_SECONDS}
    return {"base_url": server.url}


@schema.parametrize()
def test_every_operation_answers_as_documented(server: Taskq, case: Case) -> None:
    case.call_and_validate(**call_kwargs(server, case))


def test_linked_calls_answer_as_documented(server: Taskq) -> None:
    """Failures are collected, not raised: Hypothesis would replay a failing scenario to
    shrink it, but the server has moved on, so the replay draws differently and hides the
    failure behind a FlakyStrategyDefinition. Each failure is reported with its scenario,
    as curl commands.
    """
    answered: list[tuple[str, int]] = []
    failures: list[str] = []
    scenarios = SimpleNamespace(count=0)

    @hypothesis.seed(SEED)
    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.calls: list[str] = []
            scenarios.count += 1

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return call_kwargs(server, case)

        def after_call(self, response: Any, case: Case) -> None:
            super().after_call(response, case)
            answered.append((case.operation.path, response.status_code))
            self.calls.append(
                f"{case.as_curl_command(base_url=server.url)}  # {response.status_code}"
            )

        def validate_response(self, response: Any, case: Case, *args: Any, **kwargs: Any) -> None:
            try:
                super().validate_response(response, case, *args, **kwargs)
            except FailureGroup as failure:
                failures.append("\n".join([*self.calls, str(failure)]))

    settings = hypothesis.settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    # Hypothesis also replays prefixes of earlier scenarios to explore around them; against a
    # server whose state has moved on they draw differently (Flaky). That ends a run, not the
    # test: another run goes on until the number of scenarios asked for has been played.
    while True:
        try:
            Machine.run(settings=settings)
        except hypothesis.errors.Flaky:
            if scenarios.count < EXAMPLES:
                continue
        break
    assert not failures, f"{len(failures)} failing scenarios; the first:\n{failures[0]}"
    # The links led somewhere: calls on a task and on a worker that a scenario created.
    reached = {path for path, status in answered if status < 300}
    assert any(path.startswith("/api/tasks/{task_id}") for path in reached), answered
    assert any(path.startswith("/api/workers/{worker_id}") for path in reached), answered


# Found by the fuzzer once; checked here on every run, whatever the examples drawn.
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/tasks/batch", {"POST"}),
        ("GET", "/api/tasks/batch", {"POST"}),
        ("TRACE", "/healthz", {"GET", "HEAD"}),
    ],
)
def test_an_undeclared_method_is_a_405_that_lists_the_allowed_ones(
    server: Taskq, method: str, path: str, allowed: set[str]
) -> None:
    response = server.client.request(method, path, json={"tasks": [{"name": "x", "payload": {}}]})
    assert response.status_code == 405, response.text
    assert set(response.headers["Allow"].split(", ")) - {"OPTIONS"} == allowed
    assert response.json()["detail"]


# The HTTP layer's: one backend is enough.
@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_a_body_the_route_does_not_read_leaves_the_connection_usable(server: Taskq) -> None:
    """The fuzzer's requests timed out now and then: hypercorn stopped reading a keep-alive
    connection whose request body arrived after the answer (a 404, a 405, a route that
    takes no body). It happened about once in 13 tries, so this tries 40 times, on a new
    connection each time.
    """
    for attempt in range(KEEP_ALIVE_TRIES):
        method, path = UNREAD_BODIES[attempt % len(UNREAD_BODIES)]
        with httpx.Client(base_url=server.url, timeout=KEEP_ALIVE_TIMEOUT_SECONDS) as client:
            client.request(method, path, json={"attempt": attempt, "padding": "x" * attempt * 37})
            try:
                assert client.get("/healthz").status_code == 200
            except httpx.ReadTimeout:
                pytest.fail(f"the connection hung after {method} {path} (try {attempt + 1})")


def test_a_body_left_out_is_a_422(server: Taskq) -> None:
    response = server.client.post("/api/tasks/")
    assert response.status_code == 422, response.text
    assert "JSON object" in response.json()["detail"]


def test_response_times_are_naive_utc_as_documented(server: Taskq) -> None:
    created = server.submit("taskq.echo", {}, scheduled_at="2030-01-01T09:00:00+02:00")
    assert created["scheduled_at"] == "2030-01-01T07:00:00"
    documented = schema.raw_schema["components"]["schemas"]["TaskOut"]["properties"]
    assert re.fullmatch(documented["created_at"]["pattern"], created["created_at"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/tasks/", {"name": "a\x00b", "payload": {}}),
        ("POST", "/api/tasks/batch", {"tasks": [{"name": "\x00", "payload": {}}]}),
        ("PUT", "/api/tasks/1", {"name": "\x00"}),
        ("GET", "/api/tasks/?name=%00", None),
        ("POST", "/api/workers/", {"name": "worker\x00"}),
    ],
)
def test_a_name_holding_nul_is_a_422_on_every_backend(
    server: Taskq, method: str, path: str, body: Any
) -> None:
    """PostgreSQL cannot store U+0000 in text: it was a 500 there, and accepted by SQLite."""
    response = server.client.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["detail"]


def test_a_payload_holding_nul_is_kept_on_every_backend(server: Taskq) -> None:
    """Payloads are stored as JSON text, where U+0000 is an escape like any other."""
    created = server.submit("taskq.echo", {"a\x00": "b\x00"}, scheduled_at=FAR_FUTURE)
    assert server.task(created["id"])["payload"] == {"a\x00": "b\x00"}
