"""Spec errors as HTML, in the cell where they were made: the offending lines highlighted, no traceback.

A student who writes a spec in a notebook cell (``%%keditlab`` or
``keditlab.run_text``) and gets a field wrong should see *their own text*
with the wrong line marked and the fix beside it, as a compiler would show
it, not forty lines of Python stack.  The errors are the spec layer's
:class:`~keditlab.spec.SpecError` objects (file, line, column, field path,
message, fix); this module only draws them.

The text of a spec given as a string is remembered under its source name
(:func:`remember_source`), so an error raised later, from a ``Spec`` the user
passes around, can still quote its lines.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

#: Spec texts given as strings, by source name (``<cell>``), so errors can quote them.
_SOURCES: dict[str, str] = {}
#: Lines shown around each error line.
CONTEXT_LINES = 2


def remember_source(source: str, text: str) -> None:
    _SOURCES[source] = text


def _text_of(source: str) -> str | None:
    if source in _SOURCES:
        return _SOURCES[source]
    try:
        path = Path(source)
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, ValueError):
        return None


def spec_errors_html(exc: Any, text: str | None = None) -> str:
    """HTML for a :class:`~keditlab.spec.SpecValidationError`: each error, then the spec with its lines marked.

    ``text`` is the spec's YAML; when omitted it is looked up by the errors'
    file name (a remembered cell, or a file on disk).  Lines that have an error
    are shaded red, with a caret under the column; every error's message and fix
    is listed above, with its ``line:column`` and field path.
    """
    errors = list(getattr(exc, "errors", []))
    count = len(errors)
    items = "".join(
        "<li class='keditlab-spec-error'>"
        + (f"<code>line {e.line}{f':{e.column}' if e.column else ''}</code> " if e.line else "")
        + (f"<code>{html.escape(e.path)}</code>: " if e.path else "")
        + html.escape(e.message)
        + (f"<br><b>Fix:</b> {html.escape(e.fix)}" if e.fix else "")
        + "</li>"
        for e in errors)
    files = sorted({e.file for e in errors})
    header = (f"<p style='color:#cf222e;font-weight:bold'>The spec has {count} error{'s' if count != 1 else ''}"
              f"{' in ' + html.escape(', '.join(files)) if files else ''}; nothing was run.</p>")
    listing = ""
    if text is None and len(files) == 1:
        text = _text_of(files[0])
    if text is not None:
        listing = _listing(text, errors)
    return f"<div class='keditlab keditlab-errors'>{header}<ul>{items}</ul>{listing}</div>"


def _listing(text: str, errors: list[Any]) -> str:
    lines = text.splitlines() or [""]
    marked: dict[int, list[Any]] = {}
    for e in errors:
        if e.line is not None and 1 <= e.line <= len(lines):
            marked.setdefault(e.line, []).append(e)
    if not marked:
        return ""
    shown: set[int] = set()
    for number in marked:
        shown.update(range(max(1, number - CONTEXT_LINES), min(len(lines), number + CONTEXT_LINES) + 1))
    rows, previous = [], 0
    for number in sorted(shown):
        if previous and number != previous + 1:
            rows.append("<tr><td></td><td style='color:#888'>…</td></tr>")
        previous = number
        line = html.escape(lines[number - 1]) or " "
        if number in marked:
            rows.append(f"<tr class='keditlab-error-line' style='background:#ffebe9'><td style='color:#cf222e;text-align:right'>"
                        f"{number}</td><td><pre style='margin:0'>{line}</pre></td></tr>")
            for e in marked[number]:
                caret = " " * max(0, (e.column or 1) - 1) + "^ " + html.escape(e.message)
                rows.append(f"<tr><td></td><td><pre style='margin:0;color:#cf222e'>{caret}</pre></td></tr>")
        else:
            rows.append(f"<tr><td style='color:#888;text-align:right'>{number}</td><td><pre style='margin:0'>{line}</pre></td></tr>")
    return f"<table style='font-family:monospace;border-collapse:collapse'>{''.join(rows)}</table>"


def error_html(exc: BaseException) -> str:
    """Any other keditlab error (a run that cannot start, a model that cannot load) as one readable paragraph."""
    return (f"<div class='keditlab keditlab-errors'><p style='color:#cf222e'><b>{html.escape(type(exc).__name__)}</b>: "
            f"{html.escape(str(exc))}</p></div>")
