"""Event types and error classes written in SQL are members of the vocabularies in model.py."""

from __future__ import annotations

import re
from pathlib import Path

from strait_server.model import ErrorClass, EventType, RunStatus

SERVER = Path(__file__).resolve().parents[2] / "strait_server"
# The SELECT or VALUES after an INSERT INTO run_events: its first literal is the event type (5th column).
EVENT_INSERT = re.compile(r"INSERT INTO run_events \([^)]*\)\s*(?:SELECT|VALUES)[^']*'([a-z_]+)'")


def _sources() -> list[str]:
    return [p.read_text() for p in SERVER.rglob("*.py") if "_pb2" not in p.name]


def test_every_event_type_written_in_sql_is_an_event_type() -> None:
    written = {m for text in _sources() for m in EVENT_INSERT.findall(text)}
    assert written, "the pattern no longer finds the event inserts"
    assert written <= {t.value for t in EventType}, written - {t.value for t in EventType}


def test_every_error_class_named_in_sql_is_an_error_class() -> None:
    named = {m for text in _sources() for line in text.splitlines() if "error_class" in line
             for m in re.findall(r"'([a-z_]+)'", line)}
    assert named, "the pattern no longer finds error classes in SQL"
    assert named <= {c.value for c in ErrorClass}, named - {c.value for c in ErrorClass}


def test_the_vocabularies_do_not_overlap_run_statuses_by_accident() -> None:
    # "waiting" is both a status and an event type, on purpose: the event says why a run waits.
    assert {t.value for t in EventType} & {s.value for s in RunStatus} == {"waiting"}
