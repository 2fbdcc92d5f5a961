"""Errors that cross actor boundaries inside replies; the API maps each to a status."""

from __future__ import annotations


class TaskqError(Exception):
    """Base of the errors a command can answer with; ``detail`` is user-facing."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(TaskqError):
    pass


class Conflict(TaskqError):
    """The command is valid but not in the task's current state."""


class Unavailable(TaskqError):
    """The actor that should answer is gone (crashed or shutting down)."""


class Overloaded(Unavailable):
    """Too many requests already wait for the writer; the caller should retry later."""
