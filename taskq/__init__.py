"""taskq: a durable task queue with a REST API, built as an actor system on Trio.

Register handlers with ``@task("name")``; run the system with ``python -m taskq``
or, inside your own Trio program, ``await nursery.start(taskq.system.run, ...)``.
"""

from taskq.client import Client
from taskq.execution import NoRetry, Permanent
from taskq.queue import Queue
from taskq.registry import Runtime, TaskContext, task

__all__ = ["Client", "NoRetry", "Permanent", "Queue", "Runtime", "TaskContext", "task"]
