"""The dashboard in a real headless Chromium, against a real ``python -m taskq``.

Tasks are made over HTTP and must show up on the page without a reload (the
page follows ``/api/events``); pause and resume are clicked on the page and
checked in the API. A screenshot is kept with the test's files, and copied to
docs/dashboard.png for the README when TASKQ_REFRESH_SCREENSHOT is set.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import ROOT, Launcher, Taskq

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LATER = "2999-01-01T00:00:00"
PAGE_WAIT_MS = 10_000

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH")


@pytest.fixture
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    # Importing taskq installs trio-asyncio's event loop policy; Playwright's sync API
    # needs a plain asyncio loop of its own.
    taskq_policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                yield browser
            finally:
                browser.close()
    finally:
        asyncio.set_event_loop_policy(taskq_policy)


def open_page(browser: object) -> object:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    opened = browser.new_page(viewport={"width": 1280, "height": 1000})
    opened.set_default_timeout(PAGE_WAIT_MS)
    return opened


@pytest.fixture
def page(launch: Launcher, chromium: object) -> tuple[Taskq, object]:
    return launch("--workers", "2"), open_page(chromium)


def test_the_dashboard_follows_tasks_live_and_acts_on_them(
    page: tuple[Taskq, object], tmp_path: Path
) -> None:
    from playwright.sync_api import Page, expect

    server, browser_page = page
    assert isinstance(browser_page, Page)
    view = browser_page
    view.goto(server.url + "/")
    expect(view.locator("#live")).to_have_text("live")
    expect(view.locator("#workers tbody tr")).to_have_count(2)

    done = server.submit("taskq.echo", {"shown": "on the page"})
    expect(view.locator(f'#tasks tr[data-id="{done["id"]}"]')).to_have_attribute(
        "data-status", "completed"
    )
    waiting = server.submit("taskq.echo", {}, scheduled_at=LATER)
    row = view.locator(f'#tasks tr[data-id="{waiting["id"]}"]')
    expect(row).to_have_attribute("data-status", "scheduled")

    row.locator('button[data-action="pause"]').click()
    expect(row).to_have_attribute("data-status", "paused")
    assert server.task(waiting["id"])["status"] == "paused"
    row.locator('button[data-action="resume"]').click()
    expect(row).to_have_attribute("data-status", "scheduled")
    assert server.task(waiting["id"])["status"] == "scheduled"

    view.locator(f'#tasks tr[data-id="{done["id"]}"] td').first.click()
    expect(view.locator("#detail-fields")).to_contain_text("on the page")
    expect(view.locator('#counts .count[data-status="completed"] b')).to_have_text("1")

    shot = tmp_path / "dashboard.png"
    view.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    if os.environ.get("TASKQ_REFRESH_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")

    view.goto(server.url + "/docs")
    expect(view.locator("#operations")).to_contain_text("PATCH /api/tasks/{task_id}/pause")
    expect(view.locator("#operations")).to_contain_text("GET /api/events")


def test_with_a_token_the_dashboard_asks_for_it_once_and_stays_live(
    launch: Launcher, chromium: object
) -> None:
    from playwright.sync_api import Page, expect

    token = "dashboard-token-0123456789"
    server = launch("--workers", "1", env={"TASKQ_API_TOKEN": token})
    view = open_page(chromium)
    assert isinstance(view, Page)
    view.goto(server.url + "/")
    expect(view).to_have_url(server.url + "/login")
    view.fill("#token", "not-the-token-0123456789")
    view.click("button[type=submit]")
    expect(view.locator("#failed")).to_be_visible()
    view.fill("#token", token)
    view.click("button[type=submit]")
    expect(view).to_have_url(server.url + "/")
    # The page's fetches and its EventSource carry the cookie: live updates arrive.
    expect(view.locator("#live")).to_have_text("live")
    task = server.client.post(
        "/api/tasks/",
        json={"name": "taskq.echo", "payload": {}},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    expect(view.locator(f'#tasks tr[data-id="{task["id"]}"]')).to_have_attribute(
        "data-status", "completed"
    )
