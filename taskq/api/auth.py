"""API tokens: when any are configured, every route but the probes needs one.

Programs send ``Authorization: Bearer <token>``. A browser cannot put a header
on the dashboard's page loads or on its ``EventSource``, so ``/login`` takes the
token once from a form and keeps it in a cookie (HttpOnly, SameSite=Strict),
which the browser then sends with every same-origin request. A token in the
query string is not accepted: URLs end up in access logs and browser history.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from quart import Blueprint, Quart, Response, redirect, request, send_from_directory
from quart_schema import hide
from werkzeug.wrappers.response import Response as Redirect

from taskq.api.dashboard import STATIC

COOKIE = "taskq_token"
# Answer without a token: the probes, and the page that takes one.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login"})
# Pages a person opens: without a token they lead to the login form instead of a 401.
PAGES = frozenset({"/", "/docs"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="taskq"'}


def matches(given: str, tokens: Sequence[str]) -> bool:
    """Compared with every token, each in constant time, so timing tells nothing."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


def presented() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(COOKIE)


def install(app: Quart, tokens: Sequence[str]) -> None:
    """Require one of ``tokens`` on every route but ``OPEN_PATHS``; nothing when empty."""
    if not tokens:
        return
    app.register_blueprint(_login(tokens))

    @app.before_request
    async def authenticate() -> Redirect | tuple[dict[str, str], int, dict[str, str]] | None:
        if request.path in OPEN_PATHS:
            return None
        given = presented()
        if given is not None and matches(given, tokens):
            return None
        if request.method == "GET" and request.path in PAGES:
            return redirect("/login", 303)
        detail = "an API token is required" if given is None else "the API token is not valid"
        return {"detail": detail}, 401, CHALLENGE


def _login(tokens: Sequence[str]) -> Blueprint:
    login = Blueprint("login", __name__)

    @login.get("/login")
    @hide
    async def form() -> Response:
        return await send_from_directory(STATIC, "login.html")

    @login.post("/login")
    @hide
    async def sign_in() -> Redirect:
        given = (await request.form).get("token", "").strip()
        if not matches(given, tokens):
            return redirect("/login?failed", 303)
        response = redirect("/", 303)
        response.set_cookie(
            COOKIE,
            given,
            httponly=True,
            samesite="Strict",
            secure=request.scheme == "https",
        )
        return response

    return login
