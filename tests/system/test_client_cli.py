"""The client commands and ``taskq.Client`` against a real ``python -m taskq``.

Exit statuses and the separate process are checked by spawning ``python -m
taskq COMMAND``; the output of the listing commands in-process through
``client_cli.main`` (the same code, without paying a start-up each time).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from taskq import Client, client_cli
from taskq.client import STREAM_OPEN, ClientError, Unreachable
from tests.system.conftest import ROOT, Launcher, Taskq, clean_environ, eventually

COMMAND_SECONDS = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Taskq]:
    """One server for the module: each test reads only the tasks it made."""
    folder = tmp_path_factory.mktemp("client")
    launcher = Launcher(folder, f"sqlite:///{folder / 'taskq.db'}")
    try:
        yield launcher("--workers", "2")
    finally:
        launcher.close()


def taskq(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=ROOT,
        env=clean_environ({"TASKQ_URL": url, "COLUMNS": "200"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )


def run_in_process(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = client_cli.main(args, {"TASKQ_URL": url})
    out, err = capsys.readouterr()
    return status, out + err


def test_submit_wait_follows_a_task_to_its_end(
    server: Taskq, capsys: pytest.CaptureFixture[str]
) -> None:
    done = taskq(server.url, "submit", "taskq.echo", "--payload", '{"hello": "world"}', "--wait")
    assert done.returncode == 0, done.stderr
    task_id = int(done.stdout.split()[1])
    assert server.task(task_id)["status"] == "completed"
    assert '"hello": "world"' in done.stdout
    status, out = run_in_process(
        server.url, capsys, "submit", "taskq.fail", "--priority", "high", "--wait"
    )
    assert status == client_cli.EXIT_TASK_FAILED
    assert "failed on purpose" in out
    failed = server.task(int(out.split()[1]))
    assert (failed["status"], failed["priority"]) == ("failed", 3)


def test_errors_are_one_line_with_their_own_exit_status(
    server: Taskq, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = taskq(server.url, "show", "12345")
    assert missing.returncode == client_cli.EXIT_REFUSED
    assert missing.stderr.strip() == "taskq: 404: Task not found"
    with pytest.raises(SystemExit) as bad:
        client_cli.main(["submit", "taskq.echo", "--payload", "[1, 2]"], {})
    assert bad.value.code == client_cli.EXIT_USAGE
    assert "must be a JSON object" in capsys.readouterr().err
    status, out = run_in_process(server.url, capsys, "submit", "x" * 300)
    assert status == client_cli.EXIT_REFUSED
    assert out.startswith("taskq: 422: name:")
    nowhere = "http://127.0.0.1:9"
    status, out = run_in_process(nowhere, capsys, "tasks")
    assert status == client_cli.EXIT_UNREACHABLE
    assert out.startswith(f"taskq: cannot reach taskq at {nowhere}")


def test_listing_showing_pausing_and_resuming(
    server: Taskq, capsys: pytest.CaptureFixture[str]
) -> None:
    later = "2999-01-01T00:00:00"
    status, out = run_in_process(
        server.url, capsys, "submit", "taskq.echo", "--payload", '{"a": 1}', "--at", later
    )
    assert status == 0
    task_id = int(out.split()[1])
    assert out.strip() == f"task {task_id} scheduled"
    status, out = run_in_process(server.url, capsys, "tasks", "--status", "scheduled")
    assert status == 0
    assert f"│ {task_id} " in out
    assert "taskq.echo" in out
    assert run_in_process(server.url, capsys, "pause", str(task_id)) == (
        0,
        f"task {task_id} paused: paused\n",
    )
    assert server.task(task_id)["status"] == "paused"
    assert run_in_process(server.url, capsys, "resume", str(task_id))[0] == 0
    assert server.task(task_id)["status"] == "scheduled"
    status, out = run_in_process(server.url, capsys, "show", str(task_id))
    assert status == 0
    assert "2999-01-01T00:00:00" in out
    status, out = run_in_process(server.url, capsys, "workers")
    assert status == 0
    assert "worker-1" in out
    assert "worker-2" in out
    assert run_in_process(server.url, capsys, "delete", str(task_id))[0] == 0
    assert task_id not in [task["id"] for task in server.tasks()]


def test_retry_puts_a_failed_task_back(server: Taskq, capsys: pytest.CaptureFixture[str]) -> None:
    failed = server.submit("taskq.fail", {})
    eventually(lambda: server.task(failed["id"])["status"] == "failed", what="the failure")
    status, out = run_in_process(server.url, capsys, "retry", str(failed["id"]))
    assert status == 0, out
    # Back in the queue; taskq.fail fails again, so it may already have.
    assert out.startswith(f"task {failed['id']} retried: ")
    status, out = run_in_process(server.url, capsys, "retry", "987654")
    assert status == client_cli.EXIT_REFUSED
    assert out.startswith("taskq: 404: ")


def test_watch_prints_changes_as_they_happen(server: Taskq) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "taskq", "watch"],
        cwd=ROOT,
        env=clean_environ({"TASKQ_URL": server.url, "COLUMNS": "200"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        # The first line says the stream is open: from then on nothing is missed.
        assert STREAM_OPEN in watcher.stdout.readline()
        task = server.submit("taskq.echo", {})
        lines = _lines_until(watcher.stdout, "task.finished")
        assert any(f"task.created task {task['id']} taskq.echo pending" in line for line in lines)
        assert any(f"task.updated task {task['id']} taskq.echo running" in line for line in lines)
    finally:
        watcher.kill()
        watcher.wait()
        assert watcher.stdout is not None
        assert watcher.stderr is not None
        watcher.stdout.close()
        watcher.stderr.close()


def _lines_until(stdout: Iterator[str], marker: str) -> list[str]:
    lines = []
    for line in stdout:
        lines.append(line)
        if marker in line:
            return lines
    pytest.fail(f"watch ended before printing {marker!r}: {lines}")


def test_client_events_resume_and_wait(server: Taskq) -> None:
    with Client(server.url) as client:
        events = client.events()
        assert next(events) == {"kind": STREAM_OPEN}
        task = client.submit("taskq.echo", {"n": 1})
        final = client.wait(task["id"], events)
        assert final["status"] == "completed"
        assert final["result"] == {"n": 1}
        replay = client.events(after=0)
        next(replay)
        assert next(replay)["id"] == 1
        with pytest.raises(ClientError) as refused:
            client.pause(final["id"])
        assert refused.value.status == 404
    with Client("http://127.0.0.1:9") as nowhere, pytest.raises(Unreachable):
        nowhere.workers()
