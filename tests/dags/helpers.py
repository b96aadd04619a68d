"""Helpers of the tests that run the sync DAGs with dag.test(): a DAG from dags/, and the task
logs dag.test() writes to stdout (structlog's console lines), split per task and try."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"
# 2026-12-03T14:35:22.364849Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
_EVENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z \[(?P<level>[a-z]+)\s*\] "
                    r"(?P<text>.*)$")
_SOURCE = re.compile(r"^(?P<body>.*?)\s*\[(?P<logger>[\w.]+)\] loc=\S+(?P<extra>.*)$")
_TASK = re.compile(r"\[DAG TEST\] (?:(?P<starting>starting)|end task) task_id=(?P<task_id>\S+) "
                   r"map_index=(?P<map_index>-?\d+)")


def load_dag(name: str):
    """One DAG of dags/, parsed from its file (no import errors)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{name}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(name)


@dataclass
class Event:
    """One log event: its level, logger, message (may span lines), its key=value pairs (as
    logged) and what followed it (a stack trace)."""

    level: str
    logger: str = ""
    message: str = ""
    extra: str = ""
    trailer: list[str] = field(default_factory=list)


def log_events(output: str) -> list[Event]:
    events, lines = [], []
    for line in output.splitlines():
        match = _EVENT.match(line)
        if match:
            events.append(Event(match["level"]))
            lines.append([match["text"]])
        elif events:
            lines[-1].append(line)
    for event, text in zip(events, lines, strict=True):
        for i, line in enumerate(text):  # the message ends where "[logger] loc=..." is
            source = _SOURCE.match(line)
            if source:
                event.logger = source["logger"]
                event.message = "\n".join([*text[:i], source["body"]]).rstrip()
                event.extra, event.trailer = source["extra"].strip(), text[i + 1:]
                break
        else:
            event.message = "\n".join(text)
    return events


def task_logs(output: str) -> dict[tuple[str, int], list[list[Event]]]:
    """{(task id, map index): [the events of each try, in order]}."""
    tries: dict[tuple[str, int], list[list[Event]]] = defaultdict(list)
    current = None
    for event in log_events(output):
        marker = _TASK.search(event.message) if event.logger.startswith("airflow.sdk") else None
        if marker and marker["starting"]:
            current = []
            tries[(marker["task_id"], int(marker["map_index"]))].append(current)
        elif marker:
            current = None
        elif current is not None:
            current.append(event)
    return dict(tries)
