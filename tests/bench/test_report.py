"""The benchmark page names what may explain a run's tail."""

from __future__ import annotations

from bench import report


def test_the_runs_with_a_disk_stall_under_them_are_named() -> None:
    document = {
        "systems": {
            "taskq": {"disk": {"samples": 400, "stalls": 3, "fsync_max_ms": 428.7}},
            "huey": {"disk": {"samples": 400, "stalls": 0, "fsync_max_ms": 1.2}},
            "rq": {"status": "failed"},
        }
    }

    said = report.disk_stalls(document)

    assert "taskq (3, the longest 429 ms)" in said
    assert "huey" not in said
    assert "rq" not in said


def test_nothing_is_said_when_the_disk_never_stalled() -> None:
    document = {"systems": {"taskq": {"disk": {"samples": 10, "stalls": 0}}}}

    assert report.disk_stalls(document) == ""
