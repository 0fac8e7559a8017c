"""Event types and error classes written in SQL are members of the vocabularies in model.py."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import strait_server
from strait_server.model import ErrorClass, EventType, RunStatus

SERVER = Path(__file__).resolve().parents[2] / "strait_server"
# The SELECT or VALUES after an INSERT INTO run_events: its first literal is the event type (5th column).
EVENT_INSERT = re.compile(r"INSERT INTO run_events \([^)]*\)\s*(?:SELECT|VALUES)[^']*'([a-z_]+)'")


def _sources() -> list[str]:
    return [p.read_text() for p in SERVER.rglob("*.py") if "_pb2" not in p.name]


def _statements() -> list[str]:
    """Every module-level SQL text of the server, as built (fragments filled in)."""
    out = []
    for info in pkgutil.walk_packages(strait_server.__path__, "strait_server."):
        if info.name.endswith("__main__") or "_pb2" in info.name:
            continue
        module = importlib.import_module(info.name)
        out += [v for v in vars(module).values() if isinstance(v, str) and "INSERT INTO run_events" in v]
    return out


def test_event_rows_are_written_by_one_fragment() -> None:
    writers = [p.name for p in SERVER.rglob("*.py") if "INSERT INTO run_events" in p.read_text()]
    assert writers == ["fragments.py"]


def test_every_event_type_written_in_sql_is_an_event_type() -> None:
    statements = _statements()
    assert len(statements) >= 18, "the statements writing events are no longer found"
    written = {m for text in statements for m in EVENT_INSERT.findall(text)}
    assert written, "the pattern no longer finds the event types"
    assert written <= {t.value for t in EventType}, written - {t.value for t in EventType}


def test_every_error_class_named_in_sql_is_an_error_class() -> None:
    named = {m for text in _sources() for line in text.splitlines() if "error_class" in line
             for m in re.findall(r"'([a-z_]+)'", line)}
    assert named, "the pattern no longer finds error classes in SQL"
    assert named <= {c.value for c in ErrorClass}, named - {c.value for c in ErrorClass}


def test_the_vocabularies_do_not_overlap_run_statuses_by_accident() -> None:
    # "waiting" is both a status and an event type, on purpose: the event says why a run waits.
    assert {t.value for t in EventType} & {s.value for s in RunStatus} == {"waiting"}
