"""The types of the command line's values: each checks one option's text.

A type rather than ``choices`` or a check after parsing: argparse runs the type
on string defaults too, so a bad value from the environment is refused the same
way, with the option's name, and exit status 2.
"""

from __future__ import annotations

import argparse

from taskq import config

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _integer_within(text: str, low: int, high: int | None, bounds: str) -> int:
    """One check for every whole-number option; ``bounds`` says the range in words."""
    value = integer(text)
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
    return value


def count(text: str) -> int:
    return _integer_within(text, 0, None, "0 or more")


def port(text: str) -> int:
    return _integer_within(text, 0, 65535, "a port number (0-65535)")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def attempts(text: str) -> int:
    limit = config.MAX_ATTEMPTS_LIMIT
    return _integer_within(text, 1, limit, f"1 to {limit}")


def timeout(text: str) -> float | None:
    """A task's default time limit; "none" (or empty) for no limit."""
    if text.strip().lower() in ("", "none"):
        return None
    value = seconds(text)
    if not 0 < value <= config.TIMEOUT_MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {config.TIMEOUT_MAX_SECONDS:g} seconds, got {text}"
        )
    return value


def node(text: str) -> str:
    value = text.strip()
    if not 0 < len(value) <= config.NODE_NAME_MAX_LENGTH:
        raise argparse.ArgumentTypeError(
            f"must be 1 to {config.NODE_NAME_MAX_LENGTH} characters, got {text!r}"
        )
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def positive(text: str) -> int:
    return _integer_within(text, 1, None, "1 or more")


def backlog(text: str) -> int:
    limit = config.WRITER_INBOX_SIZE
    return _integer_within(text, 1, limit, f"1 to {limit}")


def token(text: str) -> str:
    try:
        config.check_token(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def flag(text: str) -> bool:
    """An environment switch: 1/true/yes/on set it, 0/false/no/off or empty leave it off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be 1 or 0, got {text!r}")


def log_level(text: str) -> str:
    value = text.upper()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return value
