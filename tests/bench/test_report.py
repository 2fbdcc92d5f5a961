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


def _latency(**extra: object) -> dict[str, object]:
    result = {"p50_ms": 2.5, "p99_ms": 4.25, "n": 10, "config": "in-process", **extra}
    return {
        "scenario": "latency",
        "n": 10,
        "systems": {"taskq": {"status": "ok", "result": result, "error": ""}},
    }


def test_the_latency_table_and_target_show_the_disks_own_commit_beside_taskq() -> None:
    floor = {"p50_ms": 1.1, "p99_ms": 1.625, "config": "SQLite alone"}
    latency = _latency(commit_floor=floor)

    table = "\n".join(report.latency_table(latency))
    targets = "\n".join(report.targets({"latency": latency}))

    assert "- the disk's floor: SQLite alone: p50 1.10 ms, p99 1.62 ms" in table
    assert (
        "| dispatch latency p99 <= 2 ms (idle, durable) | 4.25 ms"
        " (SQLite's commit alone: 1.62 ms) | **no** |"
    ) in targets


def test_a_latency_run_without_the_floor_says_nothing_of_it() -> None:
    latency = _latency()

    assert "floor" not in "\n".join(report.latency_table(latency))
    assert "| dispatch latency p99 <= 2 ms (idle, durable) | 4.25 ms | **no** |" in "\n".join(
        report.targets({"latency": latency})
    )
