"""docs/errors.md lists every ErrorInfo reason the server can send, with its status code, and no other: the
reasons are read from the errors the server's code raises."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from strait_server import errors

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"

# The domain errors and the code api/errors.py maps each to.
CODES: dict[str, str] = {
    "InvalidArgument": "INVALID_ARGUMENT",
    "NotFound": "NOT_FOUND",
    "AlreadyExists": "ALREADY_EXISTS",
    "FailedPrecondition": "FAILED_PRECONDITION",
    "Aborted": "ABORTED",
    "Unauthenticated": "UNAUTHENTICATED",
    "PermissionDenied": "PERMISSION_DENIED",
    "ResourceExhausted": "RESOURCE_EXHAUSTED",
    "Unavailable": "UNAVAILABLE",
}


def _default_reason(name: str, call: ast.Call) -> str:
    """The reason of an error raised without `reason=`: its class's, or for NotFound and AlreadyExists the one
    made from the resource type (which must then be a literal)."""
    if name in ("NotFound", "AlreadyExists"):
        resource_type = ast.literal_eval(call.args[0])
        built: errors.StraitError = getattr(errors, name)(resource_type, "name")
        return built.reason
    if name == "InvalidArgument":
        return errors.InvalidArgument([]).reason
    if name == "ResourceExhausted":
        raise AssertionError(f"ResourceExhausted raised without a reason: {ast.unparse(call)}")
    default: errors.StraitError = getattr(errors, name)("message")
    return default.reason


def raised() -> Iterator[tuple[str, str, str]]:
    """(reason, code, where) of every domain error constructed in strait_server."""
    for path in sorted((ROOT / "strait_server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in CODES:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            given = next((k.value for k in node.keywords if k.arg == "reason"), None)
            try:
                reason = ast.literal_eval(given) if given is not None else _default_reason(name, node)
            except ValueError:
                raise AssertionError(
                    f"{where}: write the reason (or resource type) as a literal, so that "
                    f"docs/errors.md can be checked against it"
                ) from None
            yield reason, CODES[name], where


def documented() -> dict[str, str]:
    """reason -> code, from the table of docs/errors.md's Reasons section."""
    text = DOC.read_text()
    section = text[text.index("## Reasons") :]
    section = section[: section.index("\n## ", 1)]
    return dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `([A-Z_]+)` \|", section, re.MULTILINE))


def test_every_reason_the_server_sends_is_documented_with_its_code() -> None:
    found = {(reason, code) for reason, code, _ in raised()}
    table = documented()
    assert len(found) > 20, "the scan no longer finds the server's errors"
    assert sorted(found - set(table.items())) == [], "raised but not in docs/errors.md (or with another code)"
    assert sorted(set(table.items()) - found) == [], "in docs/errors.md but never raised"


def test_reasons_are_upper_snake_case() -> None:
    bad = [(reason, where) for reason, _, where in raised() if not re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", reason)]
    assert bad == []
