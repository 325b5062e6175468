"""Read YAML into plain data while remembering where every key and value was written.

``yaml.safe_load`` forgets positions, but an error message is only useful if it
says *where*.  So the text is composed into PyYAML's node tree (which keeps
marks) and turned into dicts/lists/scalars here, recording a
:class:`SourceMap` from field paths (``('edits', 0, 'subject')``) to the
position of the key and of the value.  Duplicate keys, which ``safe_load``
silently resolves by keeping the last one, are reported as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from keditlab.spec.errors import Path, SpecError, format_path

_MERGE_TAG = "tag:yaml.org,2002:merge"
#: Deepest nesting a spec may have (a spec needs about six levels); deeper input is refused, not recursed into.
MAX_DEPTH = 64
#: Values a spec may expand to beyond two per character of its text, aliases counted each time they are used.
#: Written out, a value takes at least one character; only aliases of aliases can exceed that (a "billion laughs").
EXTRA_VALUES = 10_000


class _TooLarge(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in the source text."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: Any) -> "Position":
        return cls(mark.line + 1, mark.column + 1)


@dataclass
class SourceMap:
    """Where each key and value of a spec was written.

    An empty map (a spec given as a dict) answers ``None`` everywhere, so the
    same validation code serves files and notebooks.
    """

    keys: dict[Path, Position] = field(default_factory=dict)
    values: dict[Path, Position] = field(default_factory=dict)
    #: Scalars as written (``yes``, ``1889``), to quote them back in messages.
    raw: dict[Path, str] = field(default_factory=dict)

    def value(self, path: Path) -> Position | None:
        """Position of the value at ``path``, or of its nearest written ancestor."""
        path = tuple(path)
        while True:
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]

    def key(self, path: Path) -> Position | None:
        """Position of the key that names ``path`` (falls back to its value's position)."""
        path = tuple(path)
        return self.keys.get(path) or self.value(path)


@dataclass
class LoadedYaml:
    """The result of reading YAML: the data, where it came from, and any errors found."""

    data: Any
    source_map: SourceMap
    errors: list[SpecError]


def _syntax_error(exc: yaml.YAMLError, source: str) -> SpecError:
    """A PyYAML error as a SpecError: its own words, our position format, a hint."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    message = f"YAML syntax error: {problem}"
    if context and context_mark is not None and context_mark is not mark:
        message += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        message += f" ({context})"
    both = f"{problem} {context or ''}"
    if "\t" in both or "\\t" in both:
        fix = "indent with spaces, not tabs"
    elif "mapping values are not allowed" in both:
        fix = "check the indentation of this line, and quote a value that contains ': ' (e.g. prompt: \"Q: what is\")"
    elif "single document" in both:
        fix = "a spec file holds one YAML document; remove the extra '---'"
    elif "flow sequence" in both or "flow mapping" in both:
        fix = "close the '[' or '{' opened there, and quote values that contain ',', ':', '[' or '{'"
    elif "constructor for the tag" in both:
        fix = "remove the '!tag'; a spec uses plain YAML values only"
    elif "found character" in both:
        fix = "put the value in quotes"
    else:
        fix = "check the quotes, brackets and indentation around this position"
    position = Position.of(mark) if mark is not None else None
    return SpecError(
        file=source,
        line=position.line if position else None,
        column=position.column if position else None,
        path="",
        message=message,
        fix=fix,
    )


class _Builder:
    """Turns a composed node tree into plain data, filling a SourceMap on the way."""

    def __init__(self, loader: yaml.SafeLoader, source: str, text_length: int = 0) -> None:
        self.loader = loader  # used only to construct scalars (int, float, bool, null, ...)
        self.source = source
        self.source_map = SourceMap()
        self.errors: list[SpecError] = []
        self._active: set[int] = set()
        self.built = 0   # values built so far, aliases counted each time they are used
        self.max_values = EXTRA_VALUES + 2 * text_length

    def error(self, position: Position, path: Path, message: str, fix: str = "") -> None:
        self.errors.append(SpecError(self.source, position.line, position.column, format_path(path), message, fix))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.built += 1
        if self.built > self.max_values:   # aliases of aliases (`b: [*a, *a]`, `c: [*b, *b]`, ...) grow exponentially
            raise _TooLarge(f"the spec expands to more than {self.max_values:,} values (aliases of aliases)",
                            "write the values out, or use fewer levels of aliases")
        if len(path) > MAX_DEPTH:
            self.error(Position.of(node.start_mark), path[:MAX_DEPTH], f"nested more than {MAX_DEPTH} levels deep",
                       "a spec needs a few levels; remove the extra nesting")
            return None
        self.source_map.values[path] = Position.of(node.start_mark)
        if id(node) in self._active:  # a recursive alias: `a: &x [*x]`
            self.error(Position.of(node.start_mark), path, "this alias refers to itself", "remove the recursive alias")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            self.source_map.raw[path] = node.value
            try:
                return self.loader.construct_object(node, deep=True)
            except (ValueError, OverflowError) as exc:   # `1999-02-30` reads as a date that does not exist
                self.error(Position.of(node.start_mark), path, f"{node.value!r} cannot be read ({exc})",
                           "quote it to keep it as text, e.g. '" + str(node.value).replace("'", "''") + "'")
                return node.value
        finally:
            self._active.discard(id(node))

    def _pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """Key/value node pairs, with ``<<: *anchor`` merges expanded (merged pairs flagged)."""
        pairs: list[tuple[yaml.Node, yaml.Node, bool]] = []
        merged: list[tuple[yaml.Node, yaml.Node, bool]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if isinstance(src, yaml.MappingNode):
                        merged.extend((k, v, True) for k, v, _ in self._pairs(src))
                    else:
                        self.error(Position.of(src.start_mark), (), "'<<' can only merge mappings")
            else:
                pairs.append((key_node, value_node, False))
        return pairs + merged

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node, from_merge in self._pairs(node):
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(Position.of(key_node.start_mark), path, "a key must be plain text, not a list or mapping")
                continue
            key = str(key_node.value)  # the text as written: `yes:` is the key 'yes', not True
            if key in result:
                if from_merge:
                    continue  # keys written explicitly override merged ones, as in YAML
                first = self.source_map.keys.get((*path, key))
                where = f" (first given at line {first.line})" if first else ""
                self.error(
                    Position.of(key_node.start_mark),
                    (*path, key),
                    f"duplicate key '{key}'{where}",
                    "keep only one of them; with both, which value wins is easy to miss",
                )
                continue
            self.source_map.keys[(*path, key)] = Position.of(key_node.start_mark)
            result[key] = self.build(value_node, (*path, key))
        return result


def load_yaml(text: str, source: str = "<string>") -> LoadedYaml:
    """Parse ``text`` as one YAML document, keeping positions; never raises on bad YAML.

    A syntax error becomes the only entry of ``errors`` (with ``data`` None):
    after one, nothing that follows can be trusted.
    """
    try:
        loader = yaml.SafeLoader(text)   # reads the whole text: a control character (NUL, ESC, DEL) is an error here
    except yaml.YAMLError as exc:
        return LoadedYaml(None, SourceMap(), [_syntax_error(exc, source)])
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            return LoadedYaml(None, SourceMap(), [_syntax_error(exc, source)])
        except RecursionError:
            return LoadedYaml(None, SourceMap(), [_whole_file_error(source, f"the YAML is nested too deeply (more than "
                                                                    f"{MAX_DEPTH} levels)", "a spec needs a few levels; remove the extra brackets or indentation")])
        if node is None:  # an empty file
            smap = SourceMap(values={(): Position(1, 1)})
            return LoadedYaml(None, smap, [])
        builder = _Builder(loader, source, len(text))
        try:
            data = builder.build(node, ())
        except yaml.YAMLError as exc:  # e.g. an unknown !tag
            return LoadedYaml(None, SourceMap(), [_syntax_error(exc, source)])
        except _TooLarge as exc:
            return LoadedYaml(None, SourceMap(), [_whole_file_error(source, str(exc), exc.fix)])
        return LoadedYaml(data, builder.source_map, builder.errors)
    finally:
        loader.dispose()


def _whole_file_error(source: str, message: str, fix: str) -> SpecError:
    return SpecError(file=source, line=None, column=None, path="", message=message, fix=fix)
