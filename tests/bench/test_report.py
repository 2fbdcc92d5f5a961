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


def _round(figure: float, status: str = "ok") -> dict[str, object]:
    return {"status": status, "result": {"end_to_end_per_s": figure, "n": 10}, "error": ""}


def test_a_column_in_rounds_shows_its_median_round_and_lists_every_round() -> None:
    chosen = report.median_round(
        [_round(900.0), _round(1500.0), _round(1200.0)], "end_to_end_per_s"
    )

    assert chosen["result"]["end_to_end_per_s"] == 1200.0
    assert chosen["rounds"] == {"of": "end_to_end_per_s", "figures": [900.0, 1500.0, 1200.0]}
    assert "median of 3 rounds taken in turns, by end_to_end_per_s: 900, 1,500, 1,200" in (
        report.rounds_said(chosen)
    )


def test_a_failed_round_is_the_columns_outcome() -> None:
    chosen = report.median_round(
        [_round(900.0), _round(0.0, status="failed"), _round(1200.0)], "end_to_end_per_s"
    )

    assert chosen["status"] == "failed"


def test_a_column_run_once_says_nothing_of_rounds() -> None:
    once = report.median_round([_round(900.0)], "end_to_end_per_s")

    assert once["result"]["end_to_end_per_s"] == 900.0
    assert report.rounds_said(once) == ""


def test_the_cluster_table_and_target_read_the_ratio_of_two_processes_to_one() -> None:
    cluster = {
        "scenario": "cluster",
        "n": 100,
        "systems": {
            "taskq": {
                "status": "ok",
                "result": {
                    "tasks_per_s": {"1": 1000, "2": 1700},
                    "vs_one": {"1": 1.0, "2": 1.7},
                    "config": "two sizes",
                },
            }
        },
    }

    table = "\n".join(report.cluster_table(cluster))
    targets = "\n".join(report.targets({"cluster": cluster}))

    assert "| 2 processes | 1,700 | 1.70 |" in table
    assert "| PostgreSQL throughput grows with a second node (2 processes / 1) | 1.70x | yes |" in (
        targets
    )
