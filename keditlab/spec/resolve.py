"""Turn validated spec data into :class:`~keditlab.spec.types.Spec`, filling every default.

Runs only on data that passed validation, so it can trust shapes and types.
The defaults come from the data classes in :mod:`keditlab.spec.types` (the
schema's defaults are generated from the same classes).  Method settings are
*not* defaulted here: ``MethodSpec.params`` holds only what the user wrote,
and each method fills in its own defaults when it runs.

Edits given as a benchmark file (``edits: {records, format, ...}``) are read
here, into the same cases as inline edits (:mod:`keditlab.spec.edits_file`);
that is the one step that can still fail, with a :class:`SpecValidationError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keditlab.spec.edits_file import read_edits_file
from keditlab.spec.errors import SpecValidationError
from keditlab.spec.report import Reporter
from keditlab.spec.source import SourceMap
from keditlab.vocabulary import plain_text
from keditlab.spec.edits_file import records_path
from keditlab.spec.types import (
    DEFAULT_METHOD, EditCase, EditsFile, EvalSpec, GeneralSpec, JudgeSpec, MethodSpec, ModelSpec, Probe, RunSettings, Spec, StatsSpec, TracePrompt,
    TraceSpec, TrainSpec,
)


def default_name(source: str) -> str:
    """A spec's name when it gives none: its file's stem, or ``spec`` for text and dicts."""
    if source.startswith("<"):
        return "spec"
    return Path(source).stem or "spec"


def _model(value: Any) -> ModelSpec:
    if value is None:
        return ModelSpec()
    if isinstance(value, str):
        return ModelSpec(name=value)
    return ModelSpec(**{k: (dict(v) if k == "profile" else v) for k, v in value.items()})


def _method(value: str | dict[str, Any]) -> MethodSpec:
    if isinstance(value, str):
        return MethodSpec(name=value)
    params = {k: v for k, v in value.items() if k not in ("name", "label")}
    return MethodSpec(name=value["name"], params=params, label=value.get("label", ""))


def _methods(value: Any) -> tuple[MethodSpec, ...]:
    if value is None:
        return (MethodSpec(name=DEFAULT_METHOD),)
    items = value if isinstance(value, list) else [value]
    return tuple(_method(item) for item in items)


def _probes(kind: str, items: list[dict[str, str]] | None) -> tuple[Probe, ...]:
    return tuple(Probe(kind, item["prompt"], item["answer"]) for item in items or [])


def _edit(index: int, value: dict[str, Any]) -> EditCase:
    rephrase = value.get("rephrase") or []
    if isinstance(rephrase, str):
        rephrase = [rephrase]
    case_id = value.get("id")
    return EditCase(
        prompt=value["prompt"],
        subject=value["subject"],
        target=value["target"],
        ground_truth=value.get("ground_truth"),
        rephrase=tuple(rephrase),
        locality=_probes("locality", value.get("locality")),
        portability=_probes("portability", value.get("portability")),
        case_id=str(case_id) if case_id is not None else str(index),
    )


def _edits(value: Any, source: str, source_map: SourceMap | None) -> tuple[tuple[EditCase, ...], EditsFile | None]:
    if isinstance(value, list):
        return tuple(_edit(i, e) for i, e in enumerate(value)), None
    return read_edits_file(value, source, source_map)


def _stats(value: Any, source: str, source_map: SourceMap | None) -> StatsSpec:
    settings = dict(value or {})
    if settings.get("unrelated") is not None:   # read now, so a bad file is an error on its spec line
        _, settings["unrelated"] = read_edits_file(settings["unrelated"], source, source_map, section=("stats", "unrelated"))
    return StatsSpec(**settings)


def _evaluate(value: Any, source: str = "<string>") -> EvalSpec:
    if value is None:
        return EvalSpec()
    if isinstance(value, list):
        return EvalSpec(metrics=tuple(value))
    settings = dict(value)
    for key in ("metrics", "protocols", "stop"):
        if key in settings:
            settings[key] = tuple(settings[key])
    if "judge" in settings:   # `rule`, or {model} / {url, model, api_key_env, timeout}
        judge = settings["judge"]
        settings["judge"] = JudgeSpec() if judge == "rule" else JudgeSpec(**judge)
    if "general" in settings:
        settings["general"] = _general(settings["general"], source)
    return EvalSpec(**settings)


#: The published file the ``knowns`` general-ability task reads when the spec names no ``knowns_file``.
KNOWNS_PUBLISHED = "knowns/known_1000.json"


def _general(value: dict[str, Any], source: str) -> GeneralSpec:
    """``evaluate.general`` resolved: ``limit: all`` is None, and the knowns task's file found.

    A ``knowns_file`` is read from the spec's folder when relative; without
    one, the published ``knowns/known_1000.json`` is used, found as a trace's
    published ``file`` is (a local copy in ``$KEDITLAB_DATASETS``, the cache, or
    downloaded once; inside validation only its future path).
    """
    settings = dict(value)
    tasks = tuple(settings.get("tasks", GeneralSpec().tasks))
    limit = settings.get("limit", GeneralSpec().limit)
    knowns = settings.get("knowns_file")
    if "knowns" not in tasks:
        knowns = None
    elif knowns is not None:
        knowns = str(records_path(knowns, source))
    else:
        from keditlab.data.datasets import published_file  # as for trace's `file`: only when used
        from keditlab.data.download import DatasetUnavailableError

        try:
            knowns = str(published_file(KNOWNS_PUBLISHED))
        except DatasetUnavailableError as exc:   # the download's own fix speaks of `edits:`; this file is general's
            raise DatasetUnavailableError(
                f"evaluate.general: the knowns task reads the published {KNOWNS_PUBLISHED}, and "
                f"{str(exc).split(' Fix: ')[0].rstrip('.')}. Fix: give a local copy of ROME's known_1000.json as "
                "`knowns_file: /where/it/is.json` under evaluate.general, or set KEDITLAB_DATASETS to a folder that "
                f"holds {KNOWNS_PUBLISHED}") from None
    return GeneralSpec(tasks=tasks, limit=None if limit == "all" else limit, knowns_file=knowns)


def _trace(value: Any, source: str) -> TraceSpec | None:
    if value is None:
        return None
    settings = dict(value)
    settings["prompts"] = tuple(TracePrompt(p["prompt"], p["subject"], p.get("answer")) for p in settings.get("prompts") or [])
    if "kinds" in settings:
        settings["kinds"] = tuple(settings["kinds"])
    if settings.get("records") is not None:
        settings["records"] = str(records_path(settings["records"], source))
    if settings.get("file") is not None:  # a published facts file: local copy, cache, or downloaded
        from keditlab.data.datasets import published_file  # as in keditlab.spec.edits_file: only when used

        settings["records"] = str(published_file(settings.pop("file")))
    return TraceSpec(**settings)


def _train(value: Any, source: str, source_map: SourceMap | None) -> TrainSpec | None:
    if value is None:
        return None
    settings = dict(value)
    records, records_from = read_edits_file(settings.pop("records"), source, source_map, section=("train", "records"))
    validation, validation_from = ((), None)
    if settings.get("validation") is not None:
        validation, validation_from = read_edits_file(settings.pop("validation"), source, source_map,
                                                      section=("train", "validation"))
    settings.pop("validation", None)
    exclude_from, kept_apart, excluded = None, (), (0, 0)
    if settings.get("exclude") is not None:
        kept_apart, exclude_from = read_edits_file(settings.pop("exclude"), source, source_map, section=("train", "exclude"))
        records, validation, excluded = _without(records, validation, kept_apart)
        if not records:
            report = Reporter(source, source_map or SourceMap())
            report.add(("train", "exclude"), f"leaves none of the {excluded[0]} training records: each is about a subject "
                       f"of the excluded records, or has one of their prompts",
                       "train on another window or file of records (`train.records`), or exclude fewer records")
            raise SpecValidationError(report.errors)
    settings.pop("exclude", None)
    archive = settings.pop("archive", None)
    if archive is not None:
        archive = str(records_path(archive, source))
    return TrainSpec(editor=settings.pop("editor"), records=records, records_from=records_from, validation=validation,
                     validation_from=validation_from, params=settings, archive=archive, exclude_from=exclude_from,
                     exclude_count=len(kept_apart), excluded=excluded)


def _without(records: tuple[EditCase, ...], validation: tuple[EditCase, ...], kept_apart: tuple[EditCase, ...]):
    """``records`` and ``validation`` without any record about a subject of ``kept_apart``, or with one of its prompts.

    A record that edits the same subject as an evaluation record (even to
    another target) would teach the editor that very fact, so a subject match
    is enough to leave it out; case and surrounding spaces are ignored.
    Returns both tuples and how many records each lost.
    """
    subjects = {plain_text(case.subject) for case in kept_apart if case.subject}
    prompts = {plain_text(case.prompt) for case in kept_apart}

    def clear(case: EditCase) -> bool:
        return plain_text(case.subject or "") not in subjects and plain_text(case.prompt) not in prompts

    kept_records = tuple(case for case in records if clear(case))
    kept_validation = tuple(case for case in validation if clear(case))
    return kept_records, kept_validation, (len(records) - len(kept_records), len(validation) - len(kept_validation))


def resolve(data: dict[str, Any], source: str, source_map: SourceMap | None = None) -> Spec:
    """The :class:`Spec` for validated ``data`` read from ``source`` (a path, ``<string>`` or ``<dict>``).

    ``source_map`` places errors in a records file on their spec lines.
    """
    edits, edits_from = _edits(data["edits"], source, source_map) if "edits" in data else ((), None)
    return Spec(
        name=data.get("name") or default_name(source),
        model=_model(data.get("model")),
        methods=_methods(data.get("method")),
        edits=edits,
        evaluate=_evaluate(data.get("evaluate"), source),
        stats=_stats(data.get("stats"), source, source_map),
        run=RunSettings(**(data.get("run") or {})),
        version=data["keditlab"],
        source=source,
        edits_from=edits_from,
        trace=_trace(data.get("trace"), source),
        train=_train(data.get("train"), source, source_map),
    )
