"""Sweeps: one spec that stands for a grid of runs.

A KnowEdit-style table is a grid (methods × models × datasets × settings ×
seeds).  A spec's ``sweep:`` section names that grid: each key is a *spec path*
(``method``, ``model``, ``edits``, ``edits.limit``, ``run.seed``,
``method.layers``, ...) and its value the list of values that path takes; the
cells are every combination of them (the product, in the order the keys are
written), less the combinations listed under ``exclude``::

    sweep:
      method: [rome, ft-m]
      edits:
        - {dataset: zsre, path: zsre/zsre_mem_eval.json, limit: 5}
        - {dataset: counterfact, path: counterfact/counterfact.json, limit: 5}
      run.seed: [0, 1]
      exclude:
        - {method: rome, run.seed: 1}

A key that names no section, whose values are all mappings of spec paths, is a
*bundle*: each value sets its paths together, as one coordinate.  KnowEdit's
parts need one, since each part has its own metrics::

    sweep:
      method: [ft-m, rome]
      part:
        - {label: zsre, edits: {dataset: knowedit, file: ...}, evaluate: {metrics: [reliability, portability]}}
        - {label: wikibio, edits: {dataset: knowedit, file: ...}, evaluate: {metrics: [reliability, fluency]}}

Each cell is the spec's other sections with its values written in, an
ordinary spec: it is validated like one, and a cell that could not run
(ROME in batch mode, a layer the model does not have) is reported with its
coordinates before anything runs, at the line of the value that makes it
invalid.  An error every cell shares is reported once, without coordinates.

A coordinate's *label* is what tables and folders call it: the value itself
for a number or a name, the ``label`` or ``name`` of a method or model
mapping, the dataset (and its part or file, where two sources share one) of
an edit source.  ``exclude`` entries may give a value or its label.

This module expands and checks the grid (torch-free, like the rest of the
spec layer); :mod:`keditlab.runner.sweep_run` runs it, one ordinary run
folder per cell.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Callable

from keditlab.spec.errors import Path, SpecError, format_path
from keditlab.spec.report import Reporter
from keditlab.spec.source import Position, SourceMap
from keditlab.vocabulary import did_you_mean

#: The key of ``sweep:`` that lists combinations to leave out; every other key is a spec path.
EXCLUDE = "exclude"
#: Top-level sections a sweep may not vary: the language version, the sweep itself, the name (cells are named by
#: their coordinates), and the sections `keditlab trace` and `keditlab train` read (a sweep runs edits).
NOT_SWEPT = ("keditlab", "sweep", "name", "trace", "train")
#: Most cells one sweep may have: a grid larger than this is a typo more often than a plan.
MAX_CELLS = 10_000
#: Mapping forms of sections a spec may write as one value (``method: rome`` is ``method: {name: rome}``).
SHORT_FORMS = {"method": "name", "model": "name", "evaluate": "metrics"}

_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_:-]*)((?:\[\d+\])*)$")


@dataclass(frozen=True)
class Axis:
    """One key of ``sweep:``: the spec path it varies (or, for a bundle, the paths), its values and their labels."""

    key: str                      #: as written, e.g. ``run.seed``
    path: Path                    #: the spec path, e.g. ``('run', 'seed')``; ``()`` for a bundle
    values: tuple[Any, ...]
    labels: tuple[str, ...]
    #: A bundle's values are mappings of spec paths to values, written together (``part: [{label: zsre, edits: ...,
    #: evaluate: ...}]``); None for a plain axis.
    bundle: tuple[Path, ...] | None = None

    def writes(self, choice: int) -> list[tuple[Any, Path, Any]]:
        """``(where in the sweep, spec path, value)`` for each value the ``choice``-th value of this axis writes."""
        value = self.values[choice]
        if self.bundle is None:
            return [(choice, self.path, value)]
        return [((choice, key), parse_key(key) or (), item) for key, item in value.items() if key != "label"]

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.bundle if self.bundle is not None else (self.path,)


@dataclass(frozen=True)
class Cell:
    """One combination of a sweep: its number, its coordinates and the whole spec data it stands for."""

    index: int
    coords: tuple[tuple[str, str], ...]   #: (axis key, value label), in the axes' order
    choice: tuple[int, ...]               #: each axis's value index
    data: dict[str, Any] = field(repr=False)

    @property
    def label(self) -> str:
        """``method=rome, edits=zsre, run.seed=0``: how messages name the cell."""
        return ", ".join(f"{key}={label}" for key, label in self.coords)

    @property
    def slug(self) -> str:
        """``003-rome-zsre-0``: the cell's folder name stem (number first, so folders sort as the grid)."""
        return f"{self.index:03d}-" + "-".join(label for _, label in self.coords)


@dataclass(frozen=True)
class SweepGrid:
    """A sweep expanded: its axes and its cells (after ``exclude``), or the errors that stopped the expansion."""

    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]
    excluded: int = 0


def parse_key(key: str) -> Path | None:
    """``run.seed`` → ``('run', 'seed')``, ``method[1].layers`` → ``('method', 1, 'layers')``; None if malformed."""
    path: list[str | int] = []
    for segment in str(key).split("."):
        match = _SEGMENT.match(segment)
        if not match:
            return None
        path.append(match.group(1))
        path.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(path)


def value_label(value: Any) -> str:
    """What tables and folders call one value of an axis (see the module docstring)."""
    if isinstance(value, dict):
        for key in ("label", "name"):
            if isinstance(value.get(key), str):
                return value[key]
        if "dataset" in value:
            return str(value.get("part") or value["dataset"])
        return ",".join(f"{k}={value_label(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "+".join(value_label(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and "/" in value.strip("/"):   # a model's path or Hugging Face id: its last part
        return PurePath(value).name
    return str(value)


def _labels(values: list[Any]) -> tuple[str, ...]:
    """Each value's label, made unique: two edit sources of one dataset are told apart by their files' stems."""
    plain = [value_label(v) for v in values]
    labels = list(plain)
    for i, value in enumerate(values):
        if plain.count(plain[i]) > 1 and isinstance(value, dict) and isinstance(value.get("path") or value.get("file"), str):
            labels[i] = f"{plain[i]}:{PurePath(value.get('path') or value.get('file')).stem}"
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if labels.count(label) == 1 else f"{label}#{seen[label]}")
    return tuple(unique)


def _put(data: dict[str, Any], path: Path, value: Any, defaults: dict[str, Any]) -> tuple[str, str] | None:
    """Write ``value`` at ``path`` inside ``data`` (creating mappings on the way); why it cannot and the fix, or None."""
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        here = path[: depth + 1]
        child = node[part] if isinstance(part, int) else node.get(part)
        if child is None and depth == 0 and defaults.get(part) is not None and part in SHORT_FORMS:
            child = copy.deepcopy(defaults[part])   # `method.layer` with no `method:` is a setting of the default method
        if child is None and isinstance(part, str):
            child = node[part] = {}
        elif depth == 0 and isinstance(child, (str, list)) and part in SHORT_FORMS and not isinstance(path[1], int):
            if isinstance(child, list) and part != "evaluate":
                return (f"`{part}` is a list of {len(child)} here, so `{format_path(path)}` does not say which one",
                        f"name it by position (`{part}[0].{format_path(path[1:])}`), or sweep whole `{part}` values")
            child = node[part] = {SHORT_FORMS[part]: child}
        if isinstance(part, int) and isinstance(node, list) and not part < len(node):
            return (f"`{format_path(here[:-1])}` has {len(node)} entries, so there is no `{format_path(here)}`",
                    "count from 0, or sweep the whole list")
        if not isinstance(child, (dict, list)):
            return (f"`{format_path(here)}` is {child!r} here, not a mapping with settings, so nothing can go under it",
                    f"sweep `{format_path(here)}` itself")
        if isinstance(path[depth + 1], int) != isinstance(child, list):
            return (f"`{format_path(here)}` is a {'list' if isinstance(child, list) else 'mapping'} here",
                    "name its entries by position (`[0]`) for a list, by key for a mapping")
        node = child
    last = path[-1]
    if isinstance(last, int):
        if not (isinstance(node, list) and last < len(node)):
            return f"there is no `{format_path(path)}` to replace", "count from 0, or sweep the whole list"
        node[last] = copy.deepcopy(value)
    else:
        node[last] = copy.deepcopy(value)
    return None


def _moved(source_map: SourceMap, origin: Path, target: Path, key_at: Position | None) -> None:
    """Point ``target`` and everything under it at where ``origin`` was written (the sweep's value)."""
    for table in (source_map.values, source_map.keys, source_map.raw):
        for path in [p for p in table if p[: len(target)] == target]:
            del table[path]
        for path in [p for p in table if p[: len(origin)] == origin]:
            table[(*target, *path[len(origin):])] = table[path]
    if key_at is not None:
        source_map.keys[target] = key_at


def cell_source_map(source_map: SourceMap, grid: SweepGrid, cell: Cell) -> SourceMap:
    """Where each field of ``cell``'s data was written: the spec's lines, and the sweep's value lines for its coordinates."""
    moved = SourceMap(keys=dict(source_map.keys), values=dict(source_map.values), raw=dict(source_map.raw))
    for axis, choice in zip(grid.axes, cell.choice):
        for where, path, _ in axis.writes(choice):
            origin = ("sweep", axis.key, *(where if isinstance(where, tuple) else (where,)))
            key_at = source_map.keys.get(origin) if axis.bundle is not None else source_map.keys.get(("sweep", axis.key))
            _moved(moved, origin, path, key_at)
    return moved


def expand(data: dict[str, Any], report: Reporter, sections: dict[str, Any]) -> SweepGrid | None:
    """The grid of ``data['sweep']``, reporting what is wrong with the section itself (its cells are checked apart).

    ``sections`` are the schema's top-level properties: their names for
    did-you-mean on a path's first part (deeper parts are checked by validating
    the cells), their defaults for a path under a section the spec leaves out.
    """
    known_sections = list(sections)
    defaults = {name: prop.get("default") for name, prop in sections.items() if isinstance(prop, dict)}
    sweep = data.get("sweep")
    if not isinstance(sweep, dict) or not sweep:
        report.add(("sweep",), "`sweep:` must map spec paths to lists of values",
                   "write e.g. `sweep: {method: [rome, ft-m], run.seed: [0, 1]}` (docs/sweeps.md)")
        return None
    axes: list[Axis] = []
    ok = True
    for key, values in sweep.items():
        if key == EXCLUDE:
            continue
        path = parse_key(key)
        where = ("sweep", key)
        if _is_bundle(key, values, known_sections):
            bundle = _bundle_paths(key, values, report, known_sections)
            if bundle is None:
                ok = False
            else:
                labels = [v["label"] if isinstance(v.get("label"), str) else value_label(next(
                    (item for k, item in v.items() if k != "label"), "")) for v in values]
                axes.append(Axis(key, (), tuple(values), _labels(labels), bundle))
            continue
        if path is None:
            report.add(where, f"`{key}` is not a spec path", "write dotted keys such as `run.seed`, `method.layers`, "
                       "`edits.limit` (a list entry by position: `method[0].layers`)", at="key")
            ok = False
            continue
        head = path[0]
        if head in NOT_SWEPT:
            report.add(where, f"`{head}` cannot be swept", "sweep the edits' settings instead: `method`, `model`, "
                       "`edits`, `evaluate`, `stats`, `run` and the paths under them", at="key")
            ok = False
            continue
        if head not in known_sections:
            report.add(where, f"`{head}` is not a section of a spec{did_you_mean(str(head), known_sections)}",
                       f"use one of {', '.join(s for s in known_sections if s not in NOT_SWEPT)}", at="key")
            ok = False
            continue
        if not isinstance(values, list) or not values:
            report.add(where, f"the values of `{key}` must be a non-empty list",
                       f"write `{key}: [first, second]`, one value per column of the table")
            ok = False
            continue
        for i, value in enumerate(values):
            if value in values[:i]:
                report.add((*where, i), f"`{key}` takes this value twice", "remove the repeat: each value is one cell")
                ok = False
        axes.append(Axis(key, path, tuple(values), _labels(values)))
    for a, b in itertools.combinations(axes, 2):
        for pa, pb in itertools.product(a.paths, b.paths):
            (short, short_path), (long, long_path) = sorted(((a, pa), (b, pb)), key=lambda item: len(item[1]))
            if long_path[: len(short_path)] == short_path:
                if long.bundle is None and short.bundle is None:
                    report.add(("sweep", long.key), f"`{long.key}` lies inside `{short.key}`, which the sweep also varies",
                               f"sweep whole `{short.key}` values, or only `{long.key}`", at="key")
                else:
                    report.add(("sweep", long.key), f"`{long.key}` sets `{format_path(long_path)}`, inside "
                               f"`{format_path(short_path)}`, which `{short.key}` also sets",
                               f"set `{format_path(short_path)}` in one of them only", at="key")
                ok = False
                break
    if not axes and ok:
        report.add(("sweep",), "`sweep:` names no spec path to vary", "add e.g. `method: [rome, ft-m]`")
        return None
    if not ok:
        return None
    size = 1
    for axis in axes:
        size *= len(axis.values)
    if size > MAX_CELLS:
        report.add(("sweep",), f"the grid has {size:,} cells, more than {MAX_CELLS:,}",
                   "sweep fewer values, or split it into several sweeps")
        return None
    excluded = _exclusions(sweep.get(EXCLUDE), axes, report)
    if excluded is None:
        return None
    base = {k: v for k, v in data.items() if k != "sweep"}
    cells = []
    dropped = 0
    for choice in itertools.product(*(range(len(axis.values)) for axis in axes)):
        if any(all(choice[a] in allowed for a, allowed in rule.items()) for rule in excluded):
            dropped += 1
            continue
        cell_data = copy.deepcopy(base)
        for axis, i in zip(axes, choice):
            for where, path, value in axis.writes(i):
                problem = _put(cell_data, path, value, defaults)
                if problem:
                    report.add(("sweep", axis.key, *((where,) if not isinstance(where, tuple) else where))
                               if axis.bundle is not None else ("sweep", axis.key), *problem, at="key")
                    return None
        coords = tuple((axis.key, axis.labels[i]) for axis, i in zip(axes, choice))
        cells.append(Cell(len(cells), coords, tuple(choice), cell_data))
    if not cells:
        report.add(("sweep", EXCLUDE), f"`exclude` leaves none of the {size} cells", "remove an entry of `exclude`")
        return None
    return SweepGrid(tuple(axes), tuple(cells), dropped)


def _is_bundle(key: str, values: Any, known_sections: list[str]) -> bool:
    """A key that names no section, whose values are all mappings: a bundle of paths set together."""
    path = parse_key(key)
    return ((path is None or path[0] not in known_sections) and isinstance(values, list) and bool(values)
            and all(isinstance(v, dict) and v for v in values))


def _bundle_paths(key: str, values: list[dict[str, Any]], report: Reporter,
                  known_sections: list[str]) -> tuple[Path, ...] | None:
    """Every spec path a bundle's values set (reporting the ones that are not spec paths), or None."""
    paths: list[Path] = []
    ok = True
    for i, value in enumerate(values):
        if value in values[:i]:
            report.add(("sweep", key, i), f"`{key}` takes this value twice", "remove the repeat: each value is one cell")
            ok = False
        if not any(k != "label" for k in value):
            report.add(("sweep", key, i), f"this value of `{key}` sets no spec path",
                       "give it the paths it sets, e.g. `{label: zsre, edits: {...}, evaluate: {...}}`")
            ok = False
        for sub in value:
            if sub == "label":
                continue
            path = parse_key(sub)
            if path is None or path[0] not in known_sections or path[0] in NOT_SWEPT:
                head = path[0] if path else sub
                report.add(("sweep", key, i, sub), f"`{sub}` is not a spec path a sweep can set"
                           f"{did_you_mean(str(head), [s for s in known_sections if s not in NOT_SWEPT])}",
                           f"a bundle's keys are spec paths ({', '.join(s for s in known_sections if s not in NOT_SWEPT)} "
                           "and the paths under them) and `label`", at="key")
                ok = False
            elif path not in paths:
                paths.append(path)
    return tuple(paths) if ok else None


def _exclusions(entries: Any, axes: list[Axis], report: Reporter) -> list[dict[int, set[int]]] | None:
    """``exclude`` as rules: axis number → the value indices it matches (a rule matches a cell when all its axes do)."""
    if entries is None:
        return []
    where: Path = ("sweep", EXCLUDE)
    if not isinstance(entries, list):
        report.add(where, "`exclude` must be a list of combinations",
                   "write e.g. `exclude: [{method: rome, run.mode: batch}]`")
        return None
    keys = [axis.key for axis in axes]
    rules: list[dict[int, set[int]]] = []
    ok = True
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry:
            report.add((*where, n), "each entry of `exclude` maps swept paths to a value",
                       "write e.g. `{method: rome, run.seed: 1}`")
            ok = False
            continue
        rule: dict[int, set[int]] = {}
        for key, wanted in entry.items():
            if key not in keys:
                report.add((*where, n, key), f"`{key}` is not swept{did_you_mean(key, keys)}",
                           f"name one of the swept paths: {', '.join(keys)}", at="key")
                ok = False
                continue
            axis = axes[keys.index(key)]
            options = wanted if isinstance(wanted, list) and not isinstance(axis.values[0], list) else [wanted]
            matched = {i for i, (value, label) in enumerate(zip(axis.values, axis.labels))
                       for option in options if option == value or (isinstance(option, (str, int, float)) and str(option) == label)}
            if not matched:
                report.add((*where, n, key), f"`{key}` never takes {option_text(wanted)}{did_you_mean(str(wanted), axis.labels)}",
                           f"use one of its values: {', '.join(axis.labels)}")
                ok = False
                continue
            rule[keys.index(key)] = matched
        rules.append(rule)
    return rules if ok else None


def option_text(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


@dataclass(frozen=True)
class SweepSpec:
    """A valid sweep: its name, the file it came from, its grid, and each cell's resolved spec (in cell order)."""

    name: str
    source: str
    grid: SweepGrid
    specs: tuple[Any, ...]   #: one keditlab.spec.Spec per cell of ``grid.cells``
    text: str | None = None  #: the spec file's text, kept in the sweep folder so a resumed sweep runs the same cells

    @property
    def cells(self) -> tuple[Cell, ...]:
        return self.grid.cells

    def __len__(self) -> int:
        return len(self.grid.cells)


def cell_errors(grid: SweepGrid, errors_of: Callable[[Cell], list[SpecError]]) -> list[SpecError]:
    """Every cell's errors: once without coordinates when every cell has it, else marked with the cells that have it."""
    found: dict[SpecError, list[Cell]] = {}
    for cell in grid.cells:
        for error in errors_of(cell):
            found.setdefault(error, []).append(cell)
    merged = []
    for error, cells in found.items():
        if len(cells) == len(grid.cells):
            merged.append(error)
            continue
        where = f"{_where(grid, cells)}: "
        merged.append(SpecError(error.file, error.line, error.column, error.path, where + error.message, error.fix))
    return merged


def _where(grid: SweepGrid, cells: list[Cell]) -> str:
    """The cells as briefly as their coordinates allow: ``in the 4 cells with edits=zsre`` when one or two
    coordinates pick out exactly these cells, else by number and coordinates."""
    indices = {cell.index for cell in cells}
    first = cells[0]
    for size in (1, 2):
        for axes in itertools.combinations(range(len(grid.axes)), size):
            if all(all(cell.choice[a] == first.choice[a] for a in axes) for cell in cells) and indices == {
                    cell.index for cell in grid.cells if all(cell.choice[a] == first.choice[a] for a in axes)}:
                coords = ", ".join(f"{first.coords[a][0]}={first.coords[a][1]}" for a in axes)
                return (f"in the cell with {coords}" if len(cells) == 1 else
                        f"in the {len(cells)} cells with {coords}") + f" (of {len(grid.cells)})"
    names = [f"{cell.index} ({cell.label})" for cell in cells[:3]]
    more = f" and {len(cells) - 3} more" if len(cells) > 3 else ""
    return f"in cell{'s' if len(cells) > 1 else ''} {', '.join(names)}{more} of {len(grid.cells)}"
