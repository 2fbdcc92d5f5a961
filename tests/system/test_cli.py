"""The command line: every option, from the command line and from the environment.

Parsing is checked in-process through ``parse_settings`` (fast); what only the
real process shows (the start-up output, the exit codes, an environment that
really reaches the server) is checked by spawning ``python -m taskq``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskq import config
from taskq.cli import EXIT_FORCED, parse_settings
from taskq.config import Settings
from tests.system.conftest import (
    HANDLERS_MODULE,
    ROOT,
    Launcher,
    clean_environ,
    eventually,
    read_runs,
)

# The real process on its default backend, an SQLite file; docs/cluster.md's
# PostgreSQL cluster has its own process tests in test_cluster.py.
pytestmark = pytest.mark.sqlite_only

BUILTIN_HANDLERS = ["taskq.echo", "taskq.fail", "taskq.sleep"]
TEST_HANDLERS = ["tests.gated", "tests.record"]
QUICK_EXIT_SECONDS = 20.0

TOKEN_A = "a" * config.API_TOKEN_MIN_LENGTH
TOKEN_B = "b-0123456789abcdef"

ENVIRONMENT = [
    ("TASKQ_HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("TASKQ_PORT", "9123", "port", 9123),
    ("TASKQ_DB", "sqlite:////tmp/elsewhere.db", "db_url", "sqlite:////tmp/elsewhere.db"),
    ("TASKQ_WORKERS", "0", "workers", 0),
    ("TASKQ_TASKS", "one.tasks, two.tasks", "task_modules", ("one.tasks", "two.tasks")),
    ("TASKQ_GRACE", "2.5", "grace_seconds", 2.5),
    ("TASKQ_LOG_LEVEL", "debug", "log_level", "DEBUG"),
    ("TASKQ_NODE", "web-1", "node", "web-1"),
    ("TASKQ_DEAD_AFTER", "12", "dead_after_seconds", 12.0),
    ("TASKQ_NO_MIGRATE", "1", "migrate", False),
    ("TASKQ_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
    ("TASKQ_PAYLOAD_DEPTH_MAX", "8", "payload_depth_max", 8),
    ("TASKQ_HTTP_BACKLOG", "100", "http_backlog", 100),
    ("TASKQ_API_TOKEN", f"{TOKEN_A}, {TOKEN_B}", "api_tokens", (TOKEN_A, TOKEN_B)),
]

COMMAND_LINE = [
    (["--host", "0.0.0.0"], "host", "0.0.0.0"),
    (["--port", "0"], "port", 0),
    (["--db", "sqlite:///x.db"], "db_url", "sqlite:///x.db"),
    (["--workers", "7"], "workers", 7),
    (["--tasks", "one", "--tasks", "two"], "task_modules", ("one", "two")),
    (["--grace", "0"], "grace_seconds", 0.0),
    (["--log-level", "warning"], "log_level", "WARNING"),
    (["--node", "web-2"], "node", "web-2"),
    (["--dead-after", "8"], "dead_after_seconds", 8.0),
    (["--no-migrate"], "migrate", False),
    (["--max-body-bytes", "4096"], "max_body_bytes", 4096),
    (["--payload-depth-max", "3"], "payload_depth_max", 3),
    (["--http-backlog", "1"], "http_backlog", 1),
    (["--api-token", TOKEN_B, "--api-token", TOKEN_A], "api_tokens", (TOKEN_B, TOKEN_A)),
]

BAD_VALUES = [
    ("--workers", "-1", "TASKQ_WORKERS", "must be 0 or more"),
    ("--workers", "many", "TASKQ_WORKERS", "must be an integer"),
    ("--port", "70000", "TASKQ_PORT", "must be a port number"),
    ("--port", "-1", "TASKQ_PORT", "must be a port number"),
    ("--grace", "-1", "TASKQ_GRACE", "must be 0 or more seconds"),
    ("--grace", "nan", "TASKQ_GRACE", "must be 0 or more seconds"),
    ("--grace", "soon", "TASKQ_GRACE", "must be a number of seconds"),
    ("--log-level", "loud", "TASKQ_LOG_LEVEL", "must be one of DEBUG, INFO, WARNING, ERROR"),
    ("--dead-after", "0", "TASKQ_DEAD_AFTER", "must be more than 0 seconds"),
    ("--node", " ", "TASKQ_NODE", "must be 1 to 255 characters"),
    ("--max-body-bytes", "0", "TASKQ_MAX_BODY_BYTES", "must be 1 or more"),
    ("--payload-depth-max", "deep", "TASKQ_PAYLOAD_DEPTH_MAX", "must be an integer"),
    ("--http-backlog", "5000", "TASKQ_HTTP_BACKLOG", "must be 1 to 4096"),
]


def run_taskq(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m taskq`` expected to stop on its own (a refused option, say)."""
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=cwd,
        env=clean_environ(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=QUICK_EXIT_SECONDS,
        check=False,
    )


def test_defaults() -> None:
    assert parse_settings([], {}) == Settings(
        host=config.DEFAULT_HOST,
        port=config.DEFAULT_PORT,
        db_url="sqlite:///taskq.db",
        workers=config.DEFAULT_WORKERS,
        task_modules=(),
        grace_seconds=config.DEFAULT_GRACE_SECONDS,
        log_level=config.DEFAULT_LOG_LEVEL,
    )


def test_the_heartbeat_keeps_well_inside_the_dead_node_timeout() -> None:
    assert parse_settings(["--dead-after", "2"], {}).heartbeat_interval_seconds == 0.5
    assert parse_settings([], {}).heartbeat_interval_seconds == config.HEARTBEAT_INTERVAL_SECONDS


def test_settings_refuse_a_heartbeat_too_slow_for_the_dead_node_timeout() -> None:
    with pytest.raises(ValueError, match="too slow"):
        Settings(heartbeat_interval_seconds=5.0, dead_after_seconds=8.0)


def test_no_migrate_from_the_environment_can_be_switched_off() -> None:
    assert parse_settings([], {"TASKQ_NO_MIGRATE": "0"}).migrate


def test_a_bad_no_migrate_value_in_the_environment_exits_2_with_a_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_settings([], {"TASKQ_NO_MIGRATE": "maybe"})
    assert exited.value.code == 2
    assert "TASKQ_NO_MIGRATE must be 1 or 0, got 'maybe'" in capsys.readouterr().err


def test_migrate_creates_the_schema_and_exits(db_url: str, tmp_path: Path) -> None:
    done = run_taskq("migrate", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"database {db_url} is at revision 0006"
    assert (tmp_path / "taskq.db").exists()


def test_migrate_reports_an_unusable_database_url() -> None:
    done = run_taskq("migrate", "--db", "nosuchdialect://x")
    assert done.returncode == 1
    assert done.stderr.startswith("taskq migrate: ")
    assert "Traceback" not in done.stderr


def test_no_migrate_leaves_a_new_database_empty(db_url: str, tmp_path: Path) -> None:
    done = run_taskq("--db", db_url, "--port", "0", "--no-migrate")
    assert done.returncode != 0
    assert "no such table" in done.stderr


@pytest.mark.parametrize(("variable", "value", "field", "expected"), ENVIRONMENT)
def test_every_option_reads_its_environment_variable(
    variable: str, value: str, field: str, expected: Any
) -> None:
    assert getattr(parse_settings([], {variable: value}), field) == expected


@pytest.mark.parametrize(("argv", "field", "expected"), COMMAND_LINE)
def test_the_command_line_wins_over_the_environment(
    argv: list[str], field: str, expected: Any
) -> None:
    environ = {variable: value for variable, value, _, _ in ENVIRONMENT}
    assert getattr(parse_settings(argv, environ), field) == expected


def test_help_names_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_settings(["--help"], {})
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for variable, *_ in ENVIRONMENT:
        assert variable in shown


@pytest.mark.parametrize(("option", "value", "variable", "message"), BAD_VALUES)
@pytest.mark.parametrize("source", ["argv", "environ"])
def test_bad_values_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    variable: str,
    message: str,
    source: str,
) -> None:
    argv, environ = ([f"{option}={value}"], {}) if source == "argv" else ([], {variable: value})
    with pytest.raises(SystemExit) as exited:
        parse_settings(argv, environ)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}: {message}" in error
    assert value in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "argument --port: must be a port number (0-65535), got 70000"),
        (["--workers", "-3"], "argument --workers: must be 0 or more, got -3"),
    ],
)
def test_the_process_refuses_bad_values_with_exit_2(
    db_url: str, args: list[str], message: str
) -> None:
    done = run_taskq("--db", db_url, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_an_unimportable_task_module_stops_the_start(db_url: str, tmp_path: Path) -> None:
    done = run_taskq("--db", db_url, "--port", "0", "--tasks", "no_such_module_here")
    assert done.returncode != 0
    assert "cannot import task module" in done.stderr
    assert "no_such_module_here" in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stdout


def test_a_task_module_that_raises_stops_the_start_with_one_line(
    db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken_handlers.py").write_text('raise RuntimeError("handler module is broken")\n')
    done = run_taskq("--db", db_url, "--port", "0", "--tasks", "broken_handlers", cwd=tmp_path)
    assert done.returncode == 2
    assert "RuntimeError: handler module is broken" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_stops_the_start_with_one_line(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_taskq("--db", db_url, "--port", str(port))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unusable_database_stops_the_start_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'taskq.db'}"
    done = run_taskq("--db", url, "--port", "0")
    assert done.returncode == 2
    assert f"cannot use the database {url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_signal_stops_at_once_and_the_task_runs_after_restart(
    launch: Launcher, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    server = launch("--grace", "60")
    task = server.submit("tests.gated", {"log": str(log), "gate": str(gate)})
    eventually(lambda: server.task(task["id"])["status"] == "running", what="the task running")
    server.send_signal(signal.SIGINT)
    eventually(lambda: "shutting down" in server.stderr(), what="the graceful shutdown begun")
    server.send_signal(signal.SIGINT)
    # Well inside the 60 s grace period: the second signal cut it short.
    assert server.wait_exit(within=10) == EXIT_FORCED
    assert "stopping now" in server.stderr()

    gate.touch()
    again = launch()
    eventually(lambda: again.task(task["id"])["status"] == "completed", what="the task completed")
    assert read_runs(log)[task["id"]] == [1, 2]


def test_the_start_up_output_names_the_built_in_handlers(launch: Launcher, db_url: str) -> None:
    server = launch("--db", db_url, "--port", "0", defaults=False)
    assert server.handlers == BUILTIN_HANDLERS
    assert server.db == db_url


def test_every_option_from_the_environment_reaches_the_process(
    launch: Launcher, db_url: str, tmp_path: Path
) -> None:
    server = launch(
        defaults=False,
        env={
            "TASKQ_HOST": "127.0.0.2",
            "TASKQ_PORT": "0",
            "TASKQ_DB": db_url,
            "TASKQ_WORKERS": "2",
            "TASKQ_TASKS": HANDLERS_MODULE,
            "TASKQ_GRACE": "0.5",
            "TASKQ_LOG_LEVEL": "debug",
        },
    )
    assert server.url.startswith("http://127.0.0.2:")
    assert not server.url.endswith(":0")
    assert server.db == db_url
    assert server.handlers == sorted(BUILTIN_HANDLERS + TEST_HANDLERS)
    assert [worker["name"] for worker in server.workers()] == ["worker-1", "worker-2"]
    assert (tmp_path / "taskq.db").exists()

    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    task = server.submit("tests.gated", {"log": str(log), "gate": str(gate)})
    eventually(lambda: server.task(task["id"])["status"] == "running", what="the task running")
    server.send_signal(signal.SIGTERM)
    # Held forever by its gate, the task is given up after TASKQ_GRACE, not the default 10 s.
    assert server.wait_exit(within=5) == 0
    assert " DEBUG " in server.stderr()
    assert "grace period over" in server.stderr()
