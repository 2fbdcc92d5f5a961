"""The whole system as a real process: ``python -m taskq`` started, signalled, killed.

``launch`` starts taskq on the test's SQLite file with a free port and waits,
with a deadline, for the line that says where it listens. Every process a test
started is SIGKILLed at teardown if it is still alive, whatever the outcome, and
its stderr is printed there so a failing test shows what the server said.

Tests here are plain synchronous functions: each process is observed over HTTP
(``httpx``) or through its output, polling with a deadline, never by sleeping.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLERS_MODULE = "tests.system.handlers"

START_WITHIN_SECONDS = 20.0
EXIT_WITHIN_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.02
HTTP_TIMEOUT_SECONDS = 10.0
LIST_PAGE = 1000

LISTENING = re.compile(r"^taskq listening on (?P<url>http://\S+) \(database (?P<db>.*)\)$")
HANDLERS = re.compile(r"^handlers: (?P<names>.*)$")

Task = dict[str, Any]


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any TASKQ_* variable, plus ``extra``."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TASKQ_")}
    environ.update(extra or {})
    return environ


class Taskq:
    """One running ``python -m taskq``: its process, its output and an HTTP client."""

    def __init__(self, process: subprocess.Popen[str], stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.stdout: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        # A thread keeps the pipe drained, so the server never blocks on a full stdout.
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self.url = ""
        self.db = ""
        self.handlers: list[str] = []
        self._client: httpx.Client | None = None

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for_line(self, pattern: re.Pattern[str], within: float) -> re.Match[str]:
        """The first (not yet seen) stdout line matching ``pattern``, with a deadline."""
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"no line matching {pattern.pattern!r} within {within} s: {self.stdout}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(
                    f"taskq exited ({self.process.wait()}) before printing {pattern.pattern!r}; "
                    f"stdout {self.stdout}; stderr:\n{self.stderr()}"
                )
            self.stdout.append(line)
            if found := pattern.match(line):
                return found

    def wait_ready(self, within: float = START_WITHIN_SECONDS) -> None:
        listening = self.wait_for_line(LISTENING, within)
        self.url, self.db = listening["url"], listening["db"]
        self.handlers = self.wait_for_line(HANDLERS, within)["names"].split(", ")

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            assert self.url, "taskq is not listening yet"
            self._client = httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT_SECONDS)
        return self._client

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, within: float = EXIT_WITHIN_SECONDS) -> int:
        try:
            return self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"taskq still running {within} s later; stderr:\n{self.stderr()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or a power cut of the process."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.kill()
        self._reader.join(timeout=EXIT_WITHIN_SECONDS)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    # --- the HTTP API, asserting the documented status codes ---

    def submit(self, name: str, payload: Mapping[str, Any], **fields: Any) -> Task:
        response = self.client.post(
            "/api/tasks/", json={"name": name, "payload": payload, **fields}
        )
        assert response.status_code == 201, response.text
        task: Task = response.json()
        return task

    def task(self, task_id: int) -> Task:
        response = self.client.get(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task: Task = response.json()
        return task

    def tasks(self, status: str | None = None) -> list[Task]:
        """Every task (of ``status``), page by page in the API's id order."""
        found: list[Task] = []
        while True:
            params: dict[str, Any] = {"skip": len(found), "limit": LIST_PAGE}
            if status is not None:
                params["status"] = status
            response = self.client.get("/api/tasks/", params=params)
            assert response.status_code == 200, response.text
            page: list[Task] = response.json()
            found.extend(page)
            if len(page) < LIST_PAGE:
                return found

    def workers(self) -> list[dict[str, Any]]:
        response = self.client.get("/api/workers/")
        assert response.status_code == 200, response.text
        workers: list[dict[str, Any]] = response.json()
        return workers


class Launcher:
    """Starts taskq processes for one test and kills whichever are left at its end."""

    def __init__(self, folder: Path, db_url: str) -> None:
        self.folder = folder
        self.db_url = db_url
        self.started: list[Taskq] = []

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        defaults: bool = True,
        ready: bool = True,
    ) -> Taskq:
        """Start ``python -m taskq`` with ``args``.

        ``defaults`` adds the test's database, port 0 and the tests' handler
        module; ``ready`` waits until it listens (and knows its URL).
        """
        argv = [sys.executable, "-m", "taskq"]
        if defaults:
            argv += ["--db", self.db_url, "--port", "0", "--tasks", HANDLERS_MODULE]
        stderr_path = self.folder / f"taskq-{len(self.started) + 1}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [*argv, *args],
                cwd=ROOT,
                env=clean_environ(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        started = Taskq(process, stderr_path)
        self.started.append(started)
        if ready:
            started.wait_ready()
        return started

    def close(self) -> None:
        for each in self.started:
            each.close()
            print(f"--- stderr of {each.process.args}:\n{each.stderr()}")


@pytest.fixture
def launch(tmp_path: Path, db_url: str) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, db_url)
    try:
        yield launcher
    finally:
        launcher.close()


def eventually(
    check: Callable[[], bool],
    *,
    within: float = 20.0,
    what: str,
    interval: float = POLL_INTERVAL_SECONDS,
) -> None:
    """Poll ``check`` every ``interval`` s until it holds; fail after ``within`` seconds.

    A check that reads a lot (thousands of tasks) takes a longer interval, so
    that polling does not starve the processes it waits for.
    """
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        time.sleep(interval)


def utc_in(seconds: float) -> str:
    """An ISO time ``seconds`` from now, naive UTC as the API reads it."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def read_runs(log: Path) -> dict[int, list[int]]:
    """The attempts each task id started with, from the handlers' run log."""
    runs: dict[int, list[int]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            task_id, attempt = map(int, line.split())
            runs.setdefault(task_id, []).append(attempt)
    return runs
