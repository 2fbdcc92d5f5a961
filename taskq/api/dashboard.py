"""The dashboard and the API docs page: static files shipped in the package, no CDN.

Both pages are plain HTML with a little vanilla JavaScript that reads the
same HTTP API as any client (``/api/...``, ``/openapi.json``) and follows
``/api/events`` for live updates. No build step: the files are served as they are.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

from taskq.api.openapi import responds

STATIC = Path(__file__).parent / "static"
HTML = "text/html"


def blueprint() -> Blueprint:
    pages = Blueprint("dashboard", __name__)

    @pages.get("/")
    @responds(200, media_type=HTML, description="The dashboard page")
    async def dashboard() -> Response:
        """The live dashboard: counts, throughput, tasks, workers."""
        return await send_from_directory(STATIC, "dashboard.html")

    @pages.get("/docs")
    @responds(200, media_type=HTML, description="The API reference page")
    async def docs() -> Response:
        """The API reference, rendered from ``/openapi.json``."""
        return await send_from_directory(STATIC, "docs.html")

    @pages.get("/static/<path:name>")
    @responds(200, media_type="text/*", description="A file of the pages", errors=(404,))
    async def asset(name: str) -> Response:
        """A script or style sheet of the pages."""
        return await send_from_directory(STATIC, name)

    return pages
