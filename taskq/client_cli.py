"""``taskq submit|tasks|show|pause|resume|retry|delete|workers|watch``: the client commands.

They talk to a running taskq over HTTP (``--url``, or ``TASKQ_URL``) through
``taskq.Client``, with the API token of ``--token`` or ``TASKQ_API_TOKEN`` (the
first, when that lists several). Exit status: 0 done, 1 the server refused (its ``detail``
is printed), 2 bad command line, 3 server unreachable, 4 the awaited task failed,
130 interrupted (Ctrl-C, which is how ``watch`` ends).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from taskq.client import DEFAULT_URL, Client, ClientError, Json, Unreachable

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TASK_FAILED = 4
EXIT_INTERRUPTED = 130

PRIORITIES = {"low": 1, "medium": 2, "high": 3, "critical": 4}
STATUSES = ("pending", "scheduled", "running", "paused", "completed", "failed")
STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "running": "blue",
    "paused": "yellow",
    "scheduled": "magenta",
}

Command = Callable[[Client, argparse.Namespace, Console], int]


def _priority(text: str) -> int:
    if text.lower() in PRIORITIES:
        return PRIORITIES[text.lower()]
    if text in {"1", "2", "3", "4"}:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be 1-4 or one of {', '.join(PRIORITIES)}, got {text!r}")


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, like '{\"key\": 1}'")
    return value


def _task_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a task id (a positive integer), got {text!r}")
    return int(text)


def _status(task: Json) -> str:
    status = str(task["status"])
    return f"[{STATUS_STYLES.get(status, 'default')}]{status}[/]"


def _age(text: str | None) -> str:
    if text is None:
        return "never"
    seconds = (
        datetime.now(UTC).replace(tzinfo=None) - datetime.fromisoformat(text)
    ).total_seconds()
    return f"{max(0, round(seconds))} s ago"


def _progress_fraction(task: Json) -> float | None:
    value = task.get("progress")
    if isinstance(value, dict):
        value = value.get("fraction")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 100 if value > 1 else float(value)
    return None


# --- the commands ---


def submit(client: Client, args: argparse.Namespace, console: Console) -> int:
    if not args.wait:
        task = client.submit(args.name, args.payload, priority=args.priority, scheduled_at=args.at)
        console.print(f"task {task['id']} {_status(task)}")
        return 0
    events = client.events()
    next(events)  # connected: from here on no change of the new task is missed
    task = client.submit(args.name, args.payload, priority=args.priority, scheduled_at=args.at)
    console.print(f"task {task['id']} {_status(task)}")
    final = _follow(client, task["id"], events, console)
    show_task(final, console)
    return 0 if final["status"] == "completed" else EXIT_TASK_FAILED


def _follow(client: Client, task_id: int, events: Iterator[Json], console: Console) -> Json:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(f"task {task_id}", total=None)

        def seen(task: Json) -> None:
            fraction = _progress_fraction(task)
            description = f"task {task_id} {task['status']}"
            progress.update(bar, description=description, total=None if fraction is None else 1)
            if fraction is not None:
                progress.update(bar, completed=fraction)

        return client.wait(task_id, events, on_change=seen)


def list_tasks(client: Client, args: argparse.Namespace, console: Console) -> int:
    found = client.tasks(
        status=args.status,
        name=args.name,
        priority=args.priority,
        skip=args.skip,
        limit=args.limit,
        newest_first=True,
    )
    table = Table("id", "name", "priority", "status", "worker", "updated")
    for task in found:
        worker = "" if task["worker_id"] is None else str(task["worker_id"])
        table.add_row(
            str(task["id"]),
            task["name"],
            str(task["priority"]),
            _status(task),
            worker,
            task["updated_at"],
        )
    console.print(table)
    return 0


def show(client: Client, args: argparse.Namespace, console: Console) -> int:
    show_task(client.task(args.id), console)
    return 0


def show_task(task: Mapping[str, Any], console: Console) -> None:
    table = Table("field", "value", show_header=False)
    for key, value in task.items():
        shown = _status(dict(task)) if key == "status" else _text(value)
        table.add_row(key, shown)
    console.print(table)


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return "" if value is None else str(value)


def _acting(name: str, act: Callable[[Client, int], Json | None]) -> Command:
    def command(client: Client, args: argparse.Namespace, console: Console) -> int:
        task = act(client, args.id)
        console.print(f"task {args.id} {name}" + ("" if task is None else f": {_status(task)}"))
        return 0

    return command


def list_workers(client: Client, args: argparse.Namespace, console: Console) -> int:
    running = {task["worker_id"]: task for task in client.tasks(status="running", limit=1000)}
    table = Table("id", "name", "status", "current task", "heartbeat")
    for worker in client.workers():
        task = running.get(worker["id"])
        current = "" if task is None else f"{task['id']} {task['name']}"
        table.add_row(
            str(worker["id"]),
            worker["name"],
            worker["status"],
            current,
            _age(worker["last_heartbeat"]),
        )
    console.print(table)
    return 0


def watch(client: Client, args: argparse.Namespace, console: Console) -> int:
    for change in client.events(after=args.after):
        console.print(_describe(change), highlight=False)
    return 0


def _describe(change: Json) -> str:
    kind = change["kind"]
    head = f"{change.get('id', '-')} {change.get('at') or ''} {kind}"
    if change.get("task"):
        task = change["task"]
        return f"{head} task {task['id']} {task['name']} {_status(task)}"
    if change.get("worker"):
        worker = change["worker"]
        return f"{head} worker {worker['id']} {worker['name']} {worker['status']}"
    if change.get("task_id") is not None:
        return f"{head} task {change['task_id']} {json.dumps(change.get('detail') or {})}"
    return f"{head} {json.dumps(change.get('detail') or {})}"


COMMANDS: dict[str, tuple[Command, str]] = {
    "submit": (submit, "create a task (and with --wait, follow it to its end)"),
    "tasks": (list_tasks, "list tasks, newest first"),
    "show": (show, "show one task"),
    "pause": (_acting("paused", Client.pause), "pause a task"),
    "resume": (_acting("resumed", Client.resume), "resume a paused task"),
    "retry": (_acting("retried", Client.retry), "put a failed task back in the queue"),
    "delete": (_acting("deleted", Client.delete), "delete a task"),
    "workers": (list_workers, "list workers with their current task"),
    "watch": (watch, "print task and worker changes as they happen"),
}


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=environ.get("TASKQ_URL", DEFAULT_URL),
        help=f"where taskq listens (env TASKQ_URL; default {DEFAULT_URL})",
    )
    common.add_argument(
        "--token",
        default=environ.get("TASKQ_API_TOKEN", "").split(",")[0].strip() or None,
        help="the API token, when the server requires one (env TASKQ_API_TOKEN)",
    )
    parser = argparse.ArgumentParser(prog="taskq", description="Talk to a running taskq.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
        _add_arguments(name, sub)
    return parser


def _add_arguments(name: str, sub: argparse.ArgumentParser) -> None:
    if name in {"show", "pause", "resume", "retry", "delete"}:
        sub.add_argument("id", type=_task_id, help="task id")
    elif name == "submit":
        sub.add_argument("name", help="the handler's name")
        sub.add_argument("--payload", type=_payload, default={}, help="a JSON object")
        sub.add_argument("--priority", type=_priority, help="1-4 or low|medium|high|critical")
        sub.add_argument("--at", help="run at this ISO 8601 time (naive means UTC)")
        sub.add_argument("--wait", action="store_true", help="follow the task until it ends")
    elif name == "tasks":
        sub.add_argument("--status", choices=STATUSES)
        sub.add_argument("--name", help="only tasks of this name")
        sub.add_argument("--priority", type=_priority)
        sub.add_argument("--skip", type=int, default=0)
        sub.add_argument("--limit", type=int, default=50)
    elif name == "watch":
        sub.add_argument("--after", type=int, help="replay the changes after this id first")


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    args = build_parser(os.environ if environ is None else environ).parse_args(argv)
    console = Console()
    errors = Console(stderr=True)
    command, _ = COMMANDS[args.command]
    try:
        with Client(args.url, token=args.token) as client:
            return command(client, args, console)
    except ClientError as exc:
        errors.print(f"taskq: {exc.status}: {exc.detail}", highlight=False, markup=False)
        return EXIT_REFUSED
    except Unreachable as exc:
        errors.print(f"taskq: {exc}", highlight=False, markup=False)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
