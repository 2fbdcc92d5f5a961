"""The tables, the chart and docs/benchmarks.md, all made from the results files of a run.

``bench/run.py`` calls this after its scenarios, so one ``make bench`` produces the whole
page; run by hand, it remakes the page from whatever ``bench/results/*.json`` hold:

    python bench/report.py                      # bench/results -> docs/benchmarks.{md,png}
    python bench/report.py --results DIR --page OUT.md --chart OUT.png
"""

from __future__ import annotations

import argparse
import json
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
RESULTS = BENCH / "results"
PAGE = REPO_ROOT / "docs" / "benchmarks.md"
CHART = REPO_ROOT / "docs" / "benchmarks.png"
TEMPLATE = BENCH / "page_template.md"

BASELINE = "taskq"
PEERS = ("huey", "procrastinate", "rq", "celery")
PEER_SCENARIOS = ("throughput", "latency", "punctuality")
TASKQ_SCENARIOS = ("http", "scale", "priority", "cluster")
NO_FIGURE = "n/a"
TASKQ_COLOUR = "#1f6feb"
PEER_COLOUR = "#8c959f"
HATCHES = ("", "///")
# The least a bar shows on a log scale (a start that was early has no bar to speak of).
FLOOR = 0.1

# Per scenario run by every system: the figures shown and whether more is better.
METRICS: dict[str, tuple[tuple[str, bool], ...]] = {
    "throughput": (("enqueue_per_s", True), ("end_to_end_per_s", True)),
    "latency": (("p50_ms", False), ("p99_ms", False)),
    "punctuality": (("p50_ms", False), ("p99_ms", False), ("max_ms", False), ("min_ms", False)),
}

Document = dict[str, Any]


def load(folder: Path) -> dict[str, Document]:
    """Every results file of ``folder`` by its name: a scenario, or ``machine``."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def number(value: Any) -> str:
    """Three significant digits or so: whole numbers from 100, two decimals below 10."""
    if value is None:
        return NO_FIGURE
    if isinstance(value, bool):
        return "yes" if value else "no"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def figure(outcome: Document, *keys: str) -> Any:
    """A figure of one outcome (``None`` if it failed or lacks it), down nested keys."""
    if outcome.get("status") != "ok":
        return None
    value: Any = outcome["result"]
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def cell(outcome: Document, *keys: str) -> str:
    if outcome.get("status") != "ok":
        return str(outcome.get("status", NO_FIGURE))
    return number(figure(outcome, *keys))


def markdown(rows: Sequence[Sequence[str]]) -> list[str]:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def ratio(ours: Any, theirs: Any) -> str:
    """taskq / peer, where both have a figure of the same sign (early vs late means nothing)."""
    if ours is None or theirs is None or ours * theirs <= 0:
        return NO_FIGURE
    return f"{ours / theirs:.2f}"


def median_round(rounds: Sequence[Document], metric: str) -> Document:
    """One column's outcome from its rounds: the round whose ``metric`` is the median
    (the lower middle one of an even count), with every round's figure under
    ``rounds``. A failed round is the column's outcome: a median never hides a failure."""
    if len(rounds) == 1:
        return rounds[0]
    failed = [outcome for outcome in rounds if outcome["status"] != "ok"]
    if failed:
        return failed[0]
    ranked = sorted(rounds, key=lambda outcome: outcome["result"][metric])
    figures = [outcome["result"][metric] for outcome in rounds]
    return {**ranked[(len(ranked) - 1) // 2], "rounds": {"of": metric, "figures": figures}}


def rounds_said(outcome: Document) -> str:
    """What a column measured in rounds shows, and every round's figure in turn."""
    rounds = outcome.get("rounds")
    if not rounds:
        return ""
    figures = ", ".join(number(figure) for figure in rounds["figures"])
    return (
        f" (the median of {len(rounds['figures'])} rounds taken in turns, "
        f"by {rounds['of']}: {figures})"
    )


def configurations(document: Document) -> list[str]:
    lines = [""]
    for name, outcome in document["systems"].items():
        if outcome["status"] == "ok":
            lines.append(f"- {name}: {outcome['result'].get('config', '')}{rounds_said(outcome)}")
        else:
            lines.append(f"- {name}: {outcome['status']}: {outcome['error']}")
    return lines


def peer_table(document: Document) -> list[str]:
    """A row per figure, the systems side by side, then taskq / each peer."""
    scenario = document["scenario"]
    systems: dict[str, Document] = document["systems"]
    baseline = systems.get(BASELINE)
    peers = [name for name in systems if name in PEERS]
    header = [f"{scenario} (n={document['n']:,})"]
    for name, outcome in systems.items():  # a column of another size says so
        n = figure(outcome, "n")
        header.append(name if n in (None, document["n"]) else f"{name} (n={n:,})")
    if baseline is not None:
        header += [f"{BASELINE}/{peer}" for peer in peers]
    rows = [header]
    for metric, more_is_better in METRICS[scenario]:
        row = [f"{metric} ({'higher' if more_is_better else 'lower'} is better)"]
        row += [cell(outcome, metric) for outcome in systems.values()]
        if baseline is not None:
            ours = figure(baseline, metric)
            row += [ratio(ours, figure(systems[peer], metric)) for peer in peers]
        rows.append(row)
    return markdown(rows) + configurations(document)


def latency_table(document: Document) -> list[str]:
    """The peers' table, and the disk's floor measured in turns with taskq's tasks."""
    lines = peer_table(document)
    floor = commit_floor(document)
    if floor is not None:
        lines.append(
            f"- the disk's floor: {floor['config']}: p50 {number(floor['p50_ms'])} ms, "
            f"p99 {number(floor['p99_ms'])} ms"
        )
    return lines


def commit_floor(document: Document) -> Document | None:
    """What one row committed by SQLite alone took beside taskq's latency run, if measured."""
    baseline = document.get("systems", {}).get(BASELINE)
    return None if baseline is None else figure(baseline, "commit_floor")


def http_table(document: Document) -> list[str]:
    outcome = document["systems"][BASELINE]
    connections = figure(outcome, "connections") or NO_FIGURE
    rows = [
        [
            f"http (n={document['n']:,}, {connections} connections)",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "requests/s vs bare",
        ]
    ]
    bare = figure(outcome, "bare", "rps")
    for label, key in (
        ("POST /api/tasks/", "create"),
        ("GET /api/tasks/{id}", "get"),
        ("bare Quart-Trio POST", "bare"),
    ):
        rows.append(
            [
                label,
                cell(outcome, key, "rps"),
                cell(outcome, key, "p50_ms"),
                cell(outcome, key, "p99_ms"),
                ratio(figure(outcome, key, "rps"), bare),
            ]
        )
    return markdown(rows) + configurations(document)


def backend_table(
    document: Document, title: str, rows: Sequence[tuple[str, tuple[str, ...]]]
) -> list[str]:
    """taskq-only figures, a column per backend."""
    systems: dict[str, Document] = document["systems"]
    table = [[title, *systems]]
    table += [[label, *(cell(o, *keys) for o in systems.values())] for label, keys in rows]
    return markdown(table) + configurations(document)


def scale_table(document: Document) -> list[str]:
    rows = (
        ("claims/s with 1,000 queued", ("depth_1k", "claim_per_s")),
        ("claims/s with the full depth queued", ("depth_1m", "claim_per_s")),
        ("fall (1,000 / full depth; at most 2)", ("ratio",)),
        ("GET ?status=pending&limit=100 p50 ms", ("list_pending_ms", "p50_ms")),
        ("GET ?status=pending&limit=100 p99 ms", ("list_pending_ms", "p99_ms")),
        ("server RSS MB at depth", ("rss_mb",)),
    )
    return backend_table(document, f"scale (depth {document['n']:,})", rows)


def priority_table(document: Document) -> list[str]:
    rows = (
        ("CRITICAL start p50 ms", ("p50_ms",)),
        ("CRITICAL start p99 ms", ("p99_ms",)),
        ("CRITICAL start max ms", ("max_ms",)),
        ("LOW still pending after", ("low_pending_after",)),
    )
    return backend_table(document, f"priority (behind {document['n']:,} LOW)", rows)


def cluster_table(document: Document) -> list[str]:
    """A row per cluster size: tasks/s and the ratio to one process."""
    outcome = document["systems"][BASELINE]
    rows = [[f"cluster (n={document['n']:,})", "tasks/s", "vs one process"]]
    for nodes in figure(outcome, "tasks_per_s") or {}:
        label = f"{nodes} process{'es' if nodes != '1' else ''}"
        rows.append([label, cell(outcome, "tasks_per_s", nodes), cell(outcome, "vs_one", nodes)])
    return markdown(rows) + configurations(document)


TABLES: dict[str, Callable[[Document], list[str]]] = {
    **dict.fromkeys(PEER_SCENARIOS, peer_table),
    "latency": latency_table,
    "http": http_table,
    "scale": scale_table,
    "priority": priority_table,
    "cluster": cluster_table,
}


def table(document: Document) -> str:
    return "\n".join(TABLES[document["scenario"]](document))


def chart(documents: dict[str, Document], path: Path) -> bool:
    """Grouped bars of taskq beside each peer; False if no scenario run by all has results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("throughput", "end-to-end throughput\n(tasks/s, higher is better)", ("end_to_end_per_s",)),
        ("latency", "dispatch latency, idle system\n(ms, lower is better)", ("p50_ms", "p99_ms")),
        ("punctuality", "lateness of scheduled tasks\n(ms, lower is better)", ("p50_ms", "p99_ms")),
    ]
    panels = [panel for panel in panels if panel[0] in documents]
    if not panels:
        return False
    from matplotlib.patches import Patch

    figure_, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for axis, (scenario, title, metrics) in zip(axes[0], panels, strict=True):
        systems = documents[scenario]["systems"]
        names = [name for name in systems if figure(systems[name], metrics[0]) is not None]
        colours = [TASKQ_COLOUR if name.startswith(BASELINE) else PEER_COLOUR for name in names]
        width = 0.8 / len(metrics)
        for index, metric in enumerate(metrics):
            values = [figure(systems[name], metric) for name in names]
            offset = (index - (len(metrics) - 1) / 2) * width
            bars = axis.bar(
                [position + offset for position in range(len(names))],
                [max(value, FLOOR) for value in values],  # an early start has no log bar
                width,
                color=colours,
                hatch=HATCHES[index],
                edgecolor="white",
            )
            labels = [number(value) + (" early" if value < 0 else "") for value in values]
            axis.bar_label(bars, labels=labels, fontsize=7)
        axis.set_yscale("log")
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
        axis.set_title(title, fontsize=10)
        if len(metrics) > 1:
            handles = [
                Patch(facecolor=PEER_COLOUR, hatch=HATCHES[index], edgecolor="white", label=metric)
                for index, metric in enumerate(metrics)
            ]
            axis.legend(handles=handles, fontsize=8)
    figure_.suptitle("taskq beside its peers (same run, same machine; log scales)")
    figure_.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure_.savefig(path, dpi=110)
    plt.close(figure_)
    return True


def _target(label: str, shown: str, value: Any, met: Callable[[Any], bool]) -> list[str]:
    if value is None:
        return [label, NO_FIGURE, "no figure (see its table)"]
    return [label, shown.format(value), "yes" if met(value) else "**no**"]


def targets(documents: dict[str, Document]) -> list[str]:
    """The issue's floors beside this run's figures."""

    def got(scenario: str, system: str, *keys: str) -> Any:
        outcome = documents.get(scenario, {}).get("systems", {}).get(system)
        return None if outcome is None else figure(outcome, *keys)

    def per(scenario: str, system: str, peer: str, metric: str) -> Any:
        ours, theirs = got(scenario, system, metric), got(scenario, peer, metric)
        return None if ours is None or not theirs else ours / theirs

    rows = [["target", "this run", "met"]]
    rows.append(
        _target(
            "throughput (SQLite, Python API) >= 5x Huey-SQLite",
            "{:.2f}x",
            per("throughput", BASELINE, "huey", "end_to_end_per_s"),
            lambda x: x >= 5,
        )
    )
    rows.append(
        _target(
            "throughput (SQLite, Python API) >= 10,000 tasks/s",
            "{:,.0f}/s",
            got("throughput", BASELINE, "end_to_end_per_s"),
            lambda x: x >= 10_000,
        )
    )
    rows.append(
        _target(
            "HTTP single create >= 0.75 of the bare stack's requests/s",
            "{:.2f}",
            got("http", BASELINE, "create_vs_bare"),
            lambda x: x >= 0.75,
        )
    )
    rows.append(
        _target(
            "HTTP single create p99 <= 50 ms at 32 connections",
            "{:,.1f} ms",
            got("http", BASELINE, "create", "p99_ms"),
            lambda x: x <= 50,
        )
    )
    rows.append(
        _target(
            "batch endpoint >= 20,000 tasks/s",
            "{:,.0f}/s",
            got("throughput", "taskq-batch", "enqueue_per_s"),
            lambda x: x >= 20_000,
        )
    )
    floor = commit_floor(documents.get("latency", {}))
    beside_floor = "" if floor is None else f" (SQLite's commit alone: {floor['p99_ms']:,.2f} ms)"
    rows.append(
        _target(
            "dispatch latency p99 <= 2 ms (idle, durable)",
            "{:,.2f} ms" + beside_floor,
            got("latency", BASELINE, "p99_ms"),
            lambda x: x <= 2,
        )
    )
    rows.append(
        _target(
            "punctuality p99 <= 10 ms late",
            "{:,.2f} ms",
            got("punctuality", BASELINE, "p99_ms"),
            lambda x: x <= 10,
        )
    )
    rows.append(
        _target(
            "punctuality: never early (earliest start - scheduled time >= 0)",
            "{:+,.2f} ms",
            got("punctuality", BASELINE, "min_ms"),
            lambda x: x >= 0,
        )
    )
    for backend in ("sqlite", "postgresql"):
        rows.append(
            _target(
                f"{backend}: server RSS <= 300 MB with the scale depth queued",
                "{:,.0f} MB",
                got("scale", backend, "rss_mb"),
                lambda x: x <= 300,
            )
        )
        rows.append(
            _target(
                f"{backend}: claim rate at depth falls by at most 2x",
                "{:.2f}x",
                got("scale", backend, "ratio"),
                lambda x: x <= 2,
            )
        )
        rows.append(
            _target(
                f"{backend}: CRITICAL task starts within 50 ms behind the LOW backlog (p99)",
                "{:,.1f} ms",
                got("priority", backend, "p99_ms"),
                lambda x: x <= 50,
            )
        )
    rows.append(
        _target(
            "PostgreSQL throughput (one node) >= 3x procrastinate",
            "{:.2f}x",
            per("throughput", "taskq-postgresql", "procrastinate", "end_to_end_per_s"),
            lambda x: x >= 3,
        )
    )
    rows.append(
        _target(
            "PostgreSQL throughput grows with a second node (2 processes / 1)",
            "{:.2f}x",
            got("cluster", BASELINE, "vs_one", "2"),
            lambda x: x > 1,
        )
    )
    return markdown(rows)


def machine_lines(machine: Document) -> list[str]:
    if not machine:
        return ["(no machine.json in the results)"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    return [
        f"- CPU: {machine['cpu_model']}, {machine['cpus']} logical cores "
        f"(`os.cpu_count()`), {machine['memory_gb']:.1f} GB of memory",
        f"- OS: {machine['platform']}",
        f"- Python {machine['python']}, SQLite {machine['sqlite']}, "
        f"PostgreSQL {machine['postgresql']}, Redis {machine['redis']}",
        f"- packages: {versions}",
        f"- taskq at commit `{machine['commit']}`",
        f"- load average when the run began: {machine['load_average_at_start']}",
    ]


def when(documents: dict[str, Document]) -> str:
    dates = sorted(doc["date"] for name, doc in documents.items() if name != "machine")
    if not dates:
        return "no results yet"
    return dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"


def unsettled(document: Document) -> str:
    """Names the runs that began on a CPU still busy when settling gave up (``settle``)."""
    busy = [
        name
        for name, outcome in document["systems"].items()
        if outcome.get("quiet", {}).get("cpu_quiet") is False
    ]
    if not busy:
        return ""
    return f" Began on a CPU still busy after settling: {', '.join(busy)}."


def disk_stalls(document: Document) -> str:
    """Names the runs under which the disk stalled (``settle.watching``): their tails may
    be the disk's, not the system's."""
    stalled = [
        f"{name} ({disk['stalls']}, the longest {disk['fsync_max_ms']:,.0f} ms)"
        for name, outcome in document["systems"].items()
        if (disk := outcome.get("disk", {})).get("stalls")
    ]
    if not stalled:
        return ""
    return f" The disk stalled (a 4 KB fsync over 10 ms) under: {', '.join(stalled)}."


def page(documents: dict[str, Document], chart_name: str | None) -> str:
    sections = []
    for scenario in (*PEER_SCENARIOS, *TASKQ_SCENARIOS):
        if (document := documents.get(scenario)) is None:
            continue
        load = document["machine"]["load_average_at_end"]
        sections.append(
            f"### {scenario}\n\n{table(document)}\n\n"
            f"Measured {document['date']}, load average at the end {load}.{unsettled(document)}"
            f"{disk_stalls(document)}"
        )
    image = f"![taskq beside its peers]({chart_name})" if chart_name else "(no chart)"
    template = string.Template(TEMPLATE.read_text())
    return template.substitute(
        when=when(documents),
        machine="\n".join(machine_lines(documents.get("machine", {}))),
        command=documents.get("machine", {}).get("command", "make bench"),
        chart=image,
        targets="\n".join(targets(documents)),
        tables="\n\n".join(sections),
    )


def write(folder: Path, page_path: Path, chart_path: Path) -> None:
    documents = load(folder)
    made = chart(documents, chart_path)
    name = chart_path.name if chart_path.parent == page_path.parent else str(chart_path)
    page_path.write_text(page(documents, name if made else None))
    print(f"wrote {page_path} and {chart_path if made else 'no chart'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of *.json")
    parser.add_argument("--page", type=Path, default=PAGE, help="the Markdown page to write")
    parser.add_argument("--chart", type=Path, default=CHART, help="the PNG to write")
    args = parser.parse_args()
    write(args.results, args.page, args.chart)


if __name__ == "__main__":
    main()
