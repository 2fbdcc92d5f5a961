"""``taskq`` / ``python -m taskq``: run the whole system in this process.

``taskq COMMAND ...`` with a client command (``submit``, ``tasks``, ``watch``...)
talks to a running system instead: see ``taskq.client_cli``.

Every option also reads an environment variable (``TASKQ_PORT`` for ``--port``
and so on); the command line wins over the environment. ``taskq migrate``
only brings the database schema up to date and exits.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import trio
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from taskq import arguments, client_cli, config, system
from taskq.config import Settings
from taskq.registry import registry
from taskq.store.engine import migrate as apply_migrations
from taskq.store.engine import open_engine

log = logging.getLogger("taskq")

# The exit status after a second signal cut the graceful shutdown short.
EXIT_FORCED = 130


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskq",
        description="Run taskq: the REST API, the scheduler and the workers.",
        epilog="`taskq migrate [--db URL]` creates or upgrades the schema and exits.",
    )

    def option(flag: str, env: str, default: object, help: str, **kwargs: Any) -> None:
        parser.add_argument(
            flag, default=environ.get(env, default), help=f"{help} (env {env})", **kwargs
        )

    option("--host", "TASKQ_HOST", config.DEFAULT_HOST, "address to listen on")
    option(
        "--port",
        "TASKQ_PORT",
        config.DEFAULT_PORT,
        "port to listen on; 0 picks one",
        type=arguments.port,
    )
    option("--db", "TASKQ_DB", config.DEFAULT_DB_URL, "SQLAlchemy database URL")
    option(
        "--workers",
        "TASKQ_WORKERS",
        config.DEFAULT_WORKERS,
        "workers started at boot",
        type=arguments.count,
    )
    option(
        "--grace",
        "TASKQ_GRACE",
        config.DEFAULT_GRACE_SECONDS,
        "seconds running tasks get to finish at shutdown",
        type=arguments.seconds,
    )
    option(
        "--max-attempts",
        "TASKQ_MAX_ATTEMPTS",
        config.DEFAULT_MAX_ATTEMPTS,
        "executions a task gets before it fails, unless its handler or body says otherwise",
        type=arguments.attempts,
    )
    option(
        "--task-timeout",
        "TASKQ_TASK_TIMEOUT",
        "none",
        "seconds an execution may run before it is stopped as a failure; none for no limit",
        type=arguments.timeout,
    )
    option(
        "--retry-backoff",
        "TASKQ_RETRY_BACKOFF",
        config.DEFAULT_RETRY_BACKOFF_SECONDS,
        "base of the retry backoff: retry n waits min(max, base * 2**(n-1)) * uniform(0.5, 1)",
        type=arguments.seconds,
    )
    option(
        "--retry-backoff-max",
        "TASKQ_RETRY_BACKOFF_MAX",
        config.DEFAULT_RETRY_BACKOFF_MAX_SECONDS,
        "cap of the retry backoff, in seconds",
        type=arguments.seconds,
    )
    option(
        "--checkpoint-grace",
        "TASKQ_CHECKPOINT_GRACE",
        config.CHECKPOINT_GRACE_SECONDS,
        "seconds a paused handler that checkpoints gets to reach its next checkpoint",
        type=arguments.seconds,
    )
    option(
        "--log-level",
        "TASKQ_LOG_LEVEL",
        config.DEFAULT_LOG_LEVEL,
        f"logging level: {', '.join(arguments.LOG_LEVELS)}",
        type=arguments.log_level,
        metavar="LEVEL",
    )
    option(
        "--node",
        "TASKQ_NODE",
        config.default_node(),
        "this process's name in a cluster; unique per process sharing a database "
        "(default: the host name)",
        type=arguments.node,
    )
    option(
        "--dead-after",
        "TASKQ_DEAD_AFTER",
        config.DEFAULT_DEAD_AFTER_SECONDS,
        "seconds without a heartbeat after which another node's workers count as dead "
        "and their tasks are re-queued",
        type=arguments.positive_seconds,
    )
    option(
        "--max-body-bytes",
        "TASKQ_MAX_BODY_BYTES",
        config.DEFAULT_MAX_BODY_BYTES,
        "largest request body accepted, in bytes; larger ones get 413",
        type=arguments.positive,
    )
    option(
        "--payload-depth-max",
        "TASKQ_PAYLOAD_DEPTH_MAX",
        config.DEFAULT_PAYLOAD_DEPTH_MAX,
        "levels of objects and arrays a task's payload may nest; deeper ones get 422",
        type=arguments.positive,
    )
    option(
        "--http-backlog",
        "TASKQ_HTTP_BACKLOG",
        config.DEFAULT_HTTP_BACKLOG,
        "requests that may wait for the database writer; more get 503 with Retry-After",
        type=arguments.backlog,
    )
    parser.add_argument(
        "--api-token",
        action="append",
        default=None,
        type=arguments.token,
        metavar="TOKEN",
        help="require this token (Authorization: Bearer TOKEN) on every route but /healthz "
        "and /readyz; repeatable (env TASKQ_API_TOKEN, comma-separated; the environment "
        "keeps it out of the process list)",
    )
    parser.add_argument(
        "--no-migrate",
        dest="no_migrate",
        action="store_true",
        help="do not create or upgrade the schema at start; run `taskq migrate` instead "
        "(env TASKQ_NO_MIGRATE=1)",
    )
    parser.add_argument(
        "--tasks",
        action="append",
        default=None,
        metavar="MODULE",
        help="import MODULE to register its handlers; repeatable "
        "(env TASKQ_TASKS, comma-separated)",
    )
    parser.set_defaults(
        env_tokens=environ.get("TASKQ_API_TOKEN", ""),
        env_tasks=environ.get("TASKQ_TASKS", ""),
        env_no_migrate=environ.get("TASKQ_NO_MIGRATE", ""),
    )
    return parser


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        no_migrate = args.no_migrate or arguments.flag(args.env_no_migrate)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"TASKQ_NO_MIGRATE {exc}")
    modules = args.tasks if args.tasks is not None else args.env_tasks.split(",")
    tokens = args.api_token
    if tokens is None:
        tokens = [token.strip() for token in args.env_tokens.split(",") if token.strip()]
        try:
            for token in tokens:
                config.check_token(token)
        except ValueError as exc:
            parser.error(f"TASKQ_API_TOKEN: {exc}")
    return Settings(
        host=args.host,
        port=args.port,
        db_url=args.db,
        workers=args.workers,
        task_modules=tuple(name.strip() for name in modules if name.strip()),
        grace_seconds=args.grace,
        heartbeat_interval_seconds=config.heartbeat_for(args.dead_after),
        log_level=args.log_level,
        max_attempts=args.max_attempts,
        timeout_seconds=args.task_timeout,
        retry_backoff_seconds=args.retry_backoff,
        retry_backoff_max_seconds=args.retry_backoff_max,
        checkpoint_grace_seconds=args.checkpoint_grace,
        node=args.node,
        dead_after_seconds=args.dead_after,
        migrate=not no_migrate,
        max_body_bytes=args.max_body_bytes,
        payload_depth_max=args.payload_depth_max,
        http_backlog=args.http_backlog,
        api_tokens=tuple(tokens),
    )


def exposure_warning(settings: Settings) -> str | None:
    """One line for stderr when the API is open to other machines without a token."""
    if settings.api_tokens or _loopback(settings.host):
        return None
    return (
        f"taskq: warning: listening on {settings.host} without an API token; anyone who "
        "can reach this address can use the API (see --api-token and docs/security.md)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _without_password(db_url: str) -> str:
    """The database URL as it may be printed: a password shows as ``***``."""
    return make_url(db_url).render_as_string(hide_password=True)


def import_task_modules(names: Sequence[str]) -> None:
    """Import the user's handler modules, from the current folder as ``python -m`` would."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        importlib.import_module(name)


async def serve(settings: Settings) -> bool:
    """Run until SIGINT/SIGTERM; True when shutdown was graceful.

    The first signal starts the graceful shutdown; a second one stops at once
    (tasks still running then go back to the queue at the next start).
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: system.Running = await nursery.start(_run_system, settings, nursery)
            shown = _without_password(settings.db_url)
            print(f"taskq listening on {running.url} (database {shown})", flush=True)
            print(f"handlers: {', '.join(registry.names())}", flush=True)
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if not stopping:
                    log.info("received %s; shutting down", name)
                    running.stop()
                    stopping = True
                    continue
                log.warning("received %s again; stopping now", name)
                nursery.cancel_scope.cancel()
                return False
    return True


async def _run_system(
    settings: Settings, nursery: trio.Nursery, task_status: trio.TaskStatus[system.Running]
) -> None:
    """The system; once it has stopped by itself, ``serve`` stops watching signals."""
    await system.run(settings, registry, task_status=task_status)
    nursery.cancel_scope.cancel()


def build_migrate_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskq migrate", description="Create or upgrade the taskq schema, then exit."
    )
    parser.add_argument(
        "--db",
        default=environ.get("TASKQ_DB", config.DEFAULT_DB_URL),
        help="SQLAlchemy database URL (env TASKQ_DB)",
    )
    return parser


def migrate(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    db_url = build_migrate_parser(environ).parse_args(argv).db
    try:
        engine = open_engine(db_url)
        try:
            revision = apply_migrations(engine)
        finally:
            engine.dispose()
    except (ArgumentError, SQLAlchemyError) as exc:
        print(f"taskq migrate: {exc}", file=sys.stderr)
        return 1
    print(f"database {_without_password(db_url)} is at revision {revision}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["migrate"]:
        return migrate(arguments[1:], os.environ)
    if arguments and arguments[0] in client_cli.COMMANDS:
        return client_cli.main(arguments)
    settings = parse_settings(arguments, os.environ)
    warning = exposure_warning(settings)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        import_task_modules(settings.task_modules)
    except Exception as exc:
        log.debug("task module import failed", exc_info=True)
        print(f"taskq: cannot import task module: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        graceful = trio.run(serve, settings)
    except Exception as exc:
        cause = _root_cause(exc)
        if not isinstance(cause, OSError | SQLAlchemyError):
            raise
        log.debug("taskq stopped", exc_info=exc)
        print(f"taskq: {_describe(cause, settings)}", file=sys.stderr)
        return 2
    return 0 if graceful else EXIT_FORCED


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _describe(cause: OSError | SQLAlchemyError, settings: Settings) -> str:
    """One line a user can act on; the traceback is logged at DEBUG."""
    if isinstance(cause, SQLAlchemyError):
        reason = getattr(cause, "orig", None) or cause
        return f"cannot use the database {settings.db_url}: {reason}"
    if cause.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
        return f"cannot listen on {settings.host}:{settings.port}: {cause.strerror}"
    return str(cause)
