"""CEL expressions and {{ CEL }} templates in workflow definitions: compiled once when a definition is
written, so that syntax errors are INVALID_ARGUMENT then and not step failures later.

CEL (the Common Expression Language) is not Turing-complete and bounds its evaluation; the
common-expression-language package compiles in ~20 us and evaluates a compiled program in ~10 us (pure-Python
cel-python took 10-20x longer). Nothing outside this module knows which library it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import cel

MAX_EXPRESSION_CHARS = 4096

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.S)
# String literals (single, double, raw and triple quoted, with escapes) are blanked before looking for
# step references, so that a literal "steps.x" is not one.
_STRING = re.compile(r"""[rR]?('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""", re.S)
_STEP_REF = re.compile(r"\bsteps\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*[\"']([^\"']*)[\"']\s*\])")


class ExpressionError(ValueError):
    """An expression that does not compile; the message says where."""


def check(text: str) -> None:
    """Compiles a CEL expression; ExpressionError when it does not."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"must be at most {MAX_EXPRESSION_CHARS} characters")
    if not text.strip():
        raise ExpressionError("is empty")
    try:
        cel.compile(text)
    except (ValueError, RuntimeError) as exc:
        raise ExpressionError(_first_line(str(exc))) from None


def step_refs(text: str) -> set[str]:
    """The step refs an expression reads (steps.<ref> or steps["<ref>"])."""
    bare = _STRING.sub('""', text)
    return {m.group(1) or m.group(2) for m in _STEP_REF.finditer(bare)}


def templates(template_json: str) -> Iterator[str]:
    """The {{ expressions }} in the string values (and keys) of a JSON document."""
    yield from _templates_in(json.loads(template_json))


def _templates_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield from (m.group(1).strip() for m in _TEMPLATE.finditer(value))
    elif isinstance(value, list):
        for item in value:
            yield from _templates_in(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _templates_in(key)
            yield from _templates_in(item)


def _first_line(message: str) -> str:
    """The library's message without the caret drawing: 'Syntax error: ... at 1:26'."""
    lines = [line for line in message.splitlines() if line.strip() and not line.startswith("|")]
    text = " ".join(lines)
    return text.replace("Failed to parse expression", "does not parse").strip()[:300]
