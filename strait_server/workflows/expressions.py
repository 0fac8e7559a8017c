"""CEL expressions and {{ CEL }} templates in workflow definitions: compiled once when a definition is
written, so that syntax errors are INVALID_ARGUMENT then and not step failures later.

CEL (the Common Expression Language) is not Turing-complete and bounds its evaluation; the
common-expression-language package compiles in ~20 us and evaluates a compiled program in ~10 us (pure-Python
cel-python took 10-20x longer). Nothing outside this module knows which library it is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
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


class EvaluationError(ValueError):
    """An expression failed at run time (a missing key, a type error): the step fails with it."""


# Compiled once per process per expression: definitions are immutable, so the same texts come back.
_compiled = functools.lru_cache(maxsize=4096)(cel.compile)
_WHOLE = re.compile(r"\{\{(.*?)\}\}", re.S)


def evaluate(text: str, context: Mapping[str, Any]) -> Any:
    """The value of a CEL expression over `context` (plain JSON-like values)."""
    try:
        return _compiled(text).execute(dict(context))
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as exc:
        detail = f"no such key {exc}" if isinstance(exc, KeyError) else _first_line(str(exc))
        raise EvaluationError(f"{text.strip()}: {detail}") from None


def render(template_json: str, context: Mapping[str, Any]) -> Any:
    """The JSON document with every {{ expression }} replaced: a string that is exactly one template becomes
    the expression's value (a number stays a number); templates inside longer strings are spliced in as text."""
    return _render(json.loads(template_json), context)


def render_text(text: str, context: Mapping[str, Any]) -> Any:
    """A string with {{ expressions }}, rendered as render() renders a string value of a document."""
    return _render(text, context)


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _WHOLE.fullmatch(value.strip())
        if whole is not None and "{{" not in whole.group(1):
            return evaluate(whole.group(1), context)
        return _TEMPLATE.sub(lambda m: _as_text(evaluate(m.group(1), context)), value)
    if isinstance(value, list):
        return [_render(item, context) for item in value]
    if isinstance(value, dict):
        return {str(_render(key, context)): _render(item, context) for key, item in value.items()}
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


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
