"""API tokens: with any configured, nothing but the probes answers without one.

Every route the app has is tried without a token, so a route added later is
covered without being listed here.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Iterator

import httpx
import pytest
import trio
from quart.typing import TestClientProtocol as Client

from taskq import system
from taskq.api import auth
from taskq.api.app import create_app
from taskq.config import Settings
from taskq.registry import Registry
from tests.api.conftest import read

TOKEN = "first-token-0123456789"
OTHER = "second-token-abcdefghij"
OPEN = {"/healthz", "/readyz", "/login"}
READ_SECONDS = 10.0


@pytest.fixture
def app_and_client(running: system.Running) -> tuple[object, Client]:
    app = create_app(running.queue, running.monitor, Settings(api_tokens=(TOKEN, OTHER)))
    return app, app.test_client()


@pytest.fixture
def client(app_and_client: tuple[object, Client]) -> Client:
    return app_and_client[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def every_route(app: object) -> Iterator[tuple[str, str]]:
    for rule in app.url_map.iter_rules():  # type: ignore[attr-defined]
        path = re.sub(
            r"<(?:path:)?([a-z_]+)>", lambda m: "1" if "id" in m[1] else "x.js", rule.rule
        )
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield method, path


async def test_every_route_but_the_probes_needs_a_token(
    app_and_client: tuple[object, Client],
) -> None:
    app, client = app_and_client
    tried = []
    for method, path in every_route(app):
        if path in OPEN:
            continue
        response = await client.open(path, method=method, json={})
        if path in auth.PAGES:
            assert response.status_code == 303, path
            assert response.headers["Location"] == "/login"
            continue
        error = await read(response, 401)
        assert error == {"detail": "an API token is required"}, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        tried.append(path)
    assert {"/api/tasks/", "/api/events", "/metrics", "/openapi.json", "/static/x.js"} <= set(tried)


async def test_an_unknown_path_is_401_too_so_routes_do_not_leak(client: Client) -> None:
    await read(await client.get("/api/nothing-here"), 401)


async def test_the_probes_stay_open(client: Client) -> None:
    assert await read(await client.get("/healthz"), 200) == {"status": "ok"}
    assert await read(await client.get("/readyz"), 200) == {"status": "ready"}


@pytest.mark.parametrize("token", [TOKEN, OTHER])
async def test_each_configured_token_opens_the_api(client: Client, token: str) -> None:
    created = await read(
        await client.post(
            "/api/tasks/", json={"name": "taskq.echo", "payload": {}}, headers=bearer(token)
        ),
        201,
    )
    found = await read(await client.get(f"/api/tasks/{created['id']}", headers=bearer(token)), 200)
    assert found["id"] == created["id"]
    metrics = await client.get("/metrics", headers=bearer(token))
    assert metrics.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        bearer(TOKEN + "x"),
        bearer(TOKEN[:-1]),
        bearer(TOKEN.upper()),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Cookie": f"{auth.COOKIE}=wrong-token-0123456789"},
    ],
)
async def test_a_wrong_token_is_401(client: Client, headers: dict[str, str]) -> None:
    response = await client.get("/api/stats", headers=headers)
    error = await read(response, 401)
    assert error["detail"] in {"the API token is not valid", "an API token is required"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_token_in_the_query_string_is_not_accepted(client: Client) -> None:
    await read(await client.get(f"/api/stats?token={TOKEN}"), 401)


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def compare(given: bytes, token: bytes) -> bool:
        compared.append((given, token))
        return constant_time(given, token)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare)
    assert auth.matches(TOKEN, [TOKEN, OTHER])
    assert not auth.matches("nope", [TOKEN, OTHER])
    # No early exit on the first match: both tokens are compared every time.
    assert [token for _, token in compared] == [t.encode() for t in (TOKEN, OTHER, TOKEN, OTHER)]


async def test_the_login_form_sets_a_cookie_the_dashboard_and_stream_use(
    client: Client,
) -> None:
    page = await client.get("/login")
    assert page.status_code == 200
    assert 'name="token"' in await page.get_data(as_text=True)

    refused = await client.post("/login", form={"token": "wrong-token-0123456789"})
    assert refused.status_code == 303
    assert refused.headers["Location"] == "/login?failed"
    assert "Set-Cookie" not in refused.headers

    signed_in = await client.post("/login", form={"token": OTHER})
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == "/"
    cookie = signed_in.headers["Set-Cookie"]
    assert cookie.startswith(f"{auth.COOKIE}={OTHER};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie

    # The test client keeps the cookie, as the browser does.
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/static/dashboard.js")).status_code == 200
    await read(await client.get("/api/stats"), 200)


async def stream_head(host: str, port: int, headers: str) -> bytes:
    """The head and first bytes of ``/api/events``, as an ``EventSource`` would open it."""
    async with await trio.open_tcp_stream(host, port) as socket:
        await socket.send_all(f"GET /api/events HTTP/1.0\r\n{headers}\r\n".encode())
        received = b""
        with trio.fail_after(READ_SECONDS):
            while b"retry:" not in received and b"detail" not in received:
                received += await socket.receive_some()
        return received


async def test_the_event_stream_takes_the_cookie_of_a_served_system(
    nursery: trio.Nursery, settings: Settings, registry: Registry
) -> None:
    served = dataclasses.replace(settings, port=0, api_tokens=(TOKEN,))
    running: system.Running = await nursery.start(
        lambda task_status: system.run(served, registry, task_status=task_status)
    )
    address = httpx.URL(str(running.url))
    host, port = str(address.host), int(address.port or 0)
    refused = await stream_head(host, port, "")
    assert refused.startswith(b"HTTP/1.1 401"), refused
    opened = await stream_head(host, port, f"Cookie: {auth.COOKIE}={TOKEN}\r\n")
    assert opened.startswith(b"HTTP/1.1 200"), opened
    assert b"text/event-stream" in opened
    running.stop()


async def test_without_tokens_the_api_is_open(running: system.Running) -> None:
    client = create_app(running.queue, running.monitor, Settings()).test_client()
    await read(await client.get("/api/stats"), 200)
    assert (await client.get("/login")).status_code == 404


async def test_the_openapi_document_says_which_routes_need_the_token(client: Client) -> None:
    document = await read(await client.get("/openapi.json", headers=bearer(TOKEN)), 200)
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in document["paths"]["/api/tasks/"]["post"]["responses"]
    assert "401" not in document["paths"]["/healthz"]["get"]["responses"]
