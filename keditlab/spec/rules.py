"""The spec rules JSON Schema cannot express: relations between fields, and facts about the model.

* a subject must occur in its prompt (ROME edits at the subject's last token): the
  rule every benchmark record follows too (:func:`keditlab.vocabulary.case_problems`);
* method labels must be unique (they name result columns);
* edit ids must be unique (they name result rows);
* a records file named in place of the edits (``edits: {dataset, path}``) must
  exist (reading it is left to resolving, :mod:`keditlab.spec.edits_file`); a
  published ``file`` must belong to the dataset named, and is not looked for
  (it is downloaded when the spec runs);
* layer settings must be layers the model has (asked of the caller's
  ``num_layers_of``, because the spec layer does not load models);
* every method must be able to edit the model's structure: what it needs of a
  model (``x-keditlab-model-needs`` in the schema) is asked of the model's
  config (the caller's ``model_config_of``) by :mod:`keditlab.spec.model_needs`;
* ``run.mode``, ``run.batch_size`` and ``run.evaluate_at`` must fit together
  (:func:`run_settings_problems`), and every method must be able to do what
  they ask (:func:`capability_problem`, reading the capabilities the schema
  carries for each method);
* ``evaluate.judge``'s keys must fit together (an endpoint's settings need a
  ``url``, which is an ``http(s)://`` base), and a judge needs the generation
  protocol (:func:`check_judge`);
* ``evaluate.general`` needs a run mode that keeps edits on the model, task
  names that can be run, and an existing knowns file
  (:mod:`keditlab.spec.general`).

The two ``run`` checks are written as plain functions of values, without
positions, because the runner asks the same questions of a ``Spec`` built in
Python (and raises a ``RunError`` with the same words).

Each check reads the raw data defensively: a part with the wrong shape was
already reported by the schema and is skipped here.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from keditlab.spec.edits_file import file_key, file_problem
from keditlab.spec.errors import Path, format_path
from keditlab.spec.hints import did_you_mean, quoted_list
from keditlab.spec.general import check_general
from keditlab.spec.report import Reporter
from keditlab.spec.types import DEFAULT_METHOD, EVALUATE_AT, RUN_MODES, RunSettings
from keditlab.vocabulary import subject_problem, suggest_subject  # noqa: F401  (suggest_subject: its old home)

NumLayersOf = Callable[[str], "int | None"]


def method_entries(data: dict[str, Any]) -> Iterator[tuple[Path, str, dict[str, Any] | None]]:
    """Each method of a spec as (path, name, settings mapping or None for a bare name)."""
    value = data.get("method")
    items = [(("method",), value)] if not isinstance(value, list) else [(("method", i), v) for i, v in enumerate(value)]
    for path, item in items:
        if isinstance(item, str):
            yield path, item, None
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            yield path, item["name"], item


def _edits(data: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every mapping with a prompt and a subject: the edits, and the prompts of ``trace:``."""
    edits = data.get("edits")
    if isinstance(edits, list):
        for i, edit in enumerate(edits):
            if isinstance(edit, dict):
                yield ("edits", i), edit
    trace = data.get("trace")
    prompts = trace.get("prompts") if isinstance(trace, dict) else None
    if isinstance(prompts, list):
        for i, item in enumerate(prompts):
            if isinstance(item, dict):
                yield ("trace", "prompts", i), item


def check_has_work(data: dict[str, Any], source: str, report: Reporter) -> None:
    """A spec edits (``edits:``), traces (``trace:``) or trains (``train:``), or several; a trace's facts file must exist."""
    if "edits" not in data and "trace" not in data and "train" not in data:
        report.add((), "missing required key 'edits' (the edits to make)",
                   "add a list of edits, e.g. `edits: [{prompt: \"The Eiffel Tower is in\", subject: Eiffel Tower, target: Rome}]`, "
                   "or a `trace:` section to locate facts instead (docs/tracing.md)")
    trace = data.get("trace")
    if not isinstance(trace, dict):
        return
    if not trace.get("prompts") and not trace.get("records") and not trace.get("file"):
        report.add(("trace",), "the trace section names nothing to trace",
                   "add `prompts: [{prompt: ..., subject: ...}]`, `records: FILE` (ROME's known_1000.json format) "
                   "or `file: knowns/known_1000.json` (downloaded on first run)", at="key")
    if "records" in trace and "file" in trace:
        report.add(("trace", "file"), "trace has both `records` and `file`",
                   "keep one: `records` (a file on this machine) or `file` (a published file, downloaded when absent)", at="key")
    records = trace.get("records")
    if isinstance(records, str) and records:
        problem = file_problem(records, source)
        if problem:
            report.add(("trace", "records"), *problem)


def check_subjects(data: dict[str, Any], report: Reporter) -> None:
    """Each edit's (and each traced prompt's) subject occurs in its prompt: the rule benchmark records follow too.

    The rule and its words are :func:`keditlab.vocabulary.subject_problem`, the
    part of the shared case check (:func:`keditlab.vocabulary.case_problems`)
    that a JSON Schema cannot say; empty texts are the schema's to report.
    """
    for where, edit in _edits(data):
        prompt, subject = edit.get("prompt"), edit.get("subject")
        if not (isinstance(prompt, str) and isinstance(subject, str) and prompt.strip() and subject.strip()):
            continue
        problem = subject_problem(subject, prompt)
        if problem:
            message, fix = problem
            report.add((*where, "subject"), f"subject {message}", fix)


def check_labels(data: dict[str, Any], report: Reporter) -> None:
    first_seen: dict[str, Path] = {}
    for path, name, settings in method_entries(data):
        label = settings.get("label") if settings else None
        has_label = isinstance(label, str) and bool(label)
        label = label if has_label else name
        if label in first_seen:
            where = (*path, "label") if has_label else path
            report.add(
                where,
                f"two methods are labelled '{label}' ({format_path(first_seen[label])} and {format_path(path)}); labels name the results, so they must differ",
                f"give each a distinct label, e.g. {{name: {name}, label: {label}-2, ...}}",
            )
        else:
            first_seen[label] = path


def check_case_ids(data: dict[str, Any], report: Reporter) -> None:
    first_seen: dict[str, int] = {}
    for where, edit in _edits(data):
        if where[0] != "edits":
            continue
        i = where[1]
        given = edit.get("id")
        case_id = str(given) if isinstance(given, (str, int)) and not isinstance(given, bool) else str(i)
        if case_id in first_seen:
            path = ("edits", i, "id") if "id" in edit else ("edits", i)
            report.add(
                path,
                f"two edits have the id '{case_id}' (edits[{first_seen[case_id]}] and edits[{i}])",
                "give each edit a distinct id (an edit without one is named by its position)",
            )
        else:
            first_seen[case_id] = i


def check_edits_file(data: dict[str, Any], report: Reporter, schema: dict[str, Any] | None = None) -> None:
    """``edits: {dataset, path | file, ...}`` (and ``stats.unrelated``) names its dataset and its file once.

    The older spelling ``{records, format}`` is accepted; mixing the two
    spellings, or naming no dataset, is an error that says how to write it.
    A ``path`` must exist (read from the spec's folder when relative); a
    published ``file`` must be one of that dataset's, and need not be here yet:
    it is downloaded when the spec runs, never while it is validated.
    """
    owners = ((schema or {}).get("$defs", {}).get("edits-file", {}).get("properties", {}).get("file", {})
              .get("x-keditlab-datasets", {}))
    stats = data.get("stats")
    for section, edits in ((("edits",), data.get("edits")),
                           (("stats", "unrelated"), stats.get("unrelated") if isinstance(stats, dict) else None)):
        if isinstance(edits, dict):
            _check_one_edits_file(section, edits, report, owners)


def _check_one_edits_file(section: Path, edits: dict[str, Any], report: Reporter, owners: dict[str, str]) -> None:
    """``owners``: the dataset each published file belongs to (the schema's ``x-keditlab-datasets``)."""
    name = ".".join(map(str, section))
    if "dataset" in edits and "format" in edits:
        report.add((*section, "format"), f"{name} has both `dataset` and `format`",
                   "keep `dataset` (format is its older name)", at="key")
    elif "dataset" not in edits and "format" not in edits and {"path", "records", "file"} & set(edits):
        known = owners.get(edits["file"]) if isinstance(edits.get("file"), str) else None
        example = known or "counterfact"
        report.add(section, f"{name} read from a benchmark need `dataset`",
                   f"add `dataset: {example}`" + ("" if known else " (or zsre, mquake, knowedit, rippleedits, easyedit)"))
    given = [key for key in ("path", "records", "file") if key in edits]
    if "path" in edits and "records" in edits:
        report.add((*section, "records"), f"{name} has both `path` and `records`",
                   "keep `path` (records is its older name)", at="key")
    elif "file" in edits and len(given) > 1:
        other = given[0]
        report.add((*section, "file"), f"{name} has both `{other}` and `file`",
                   f"keep one: `{other}` (a file on this machine) or `file` (a published file, downloaded when absent)", at="key")
    _check_published_dataset(section, edits, report, owners)
    dataset = edits.get("dataset", edits.get("format"))
    if "part" in edits and isinstance(dataset, str) and dataset != "knowedit":
        report.add((*section, "part"), f"{name}.part picks one of KnowEdit's parts, but the dataset is {dataset}",
                   "remove `part`, or read a KnowEdit file with `dataset: knowedit`", at="key")
    key = file_key(edits)
    written = edits.get(key)
    if not isinstance(written, str) or not written.strip():
        return  # no file (a published one, or the dataset's, is downloaded), or a value the schema reports
    problem = file_problem(written, report.source)
    if problem:
        report.add((*section, key), *problem)


def _check_published_dataset(section: Path, edits: dict[str, Any], report: Reporter, owners: dict[str, str]) -> None:
    """A published ``file`` is read by the reader of the dataset it belongs to."""
    published, dataset = edits.get("file"), edits.get("dataset", edits.get("format"))
    if not isinstance(published, str) or not isinstance(dataset, str):
        return
    known = owners.get(published)
    if known is not None and known != dataset:
        report.add((*section, "file"), f"{published} is a {known} file, but {'.'.join(map(str, section))}.dataset is {dataset}",
                   f"write `dataset: {known}`, or name a {dataset} file")


def _model_name(data: dict[str, Any], schema: dict[str, Any]) -> str | None:
    model = data.get("model", schema["properties"]["model"].get("default"))
    if isinstance(model, dict):
        model = model.get("name", schema["$defs"]["model"]["properties"]["name"].get("default"))
    return model if isinstance(model, str) and model.strip() else None


def check_layers(data: dict[str, Any], schema: dict[str, Any], num_layers_of: NumLayersOf | None, report: Reporter) -> None:
    """Layer settings (``x-keditlab-layer`` in the schema) must lie in ``0 .. num_layers-1``."""
    if num_layers_of is None:
        return
    model = _model_name(data, schema)
    if model is None:
        return
    cache: list[int | None] = []

    def num_layers() -> int | None:
        if not cache:
            try:
                cache.append(num_layers_of(model))
            except Exception:  # noqa: BLE001 - an unreachable model is the loader's error to report, not the spec's
                cache.append(None)
        return cache[0]

    defs = schema["$defs"]
    for path, name, settings in method_entries(data):
        definition = defs.get(f"method-{name}")
        if not settings or not definition:
            continue
        for key, prop in definition["properties"].items():
            if not prop.get("x-keditlab-layer") or key not in settings:
                continue
            value = settings[key]
            indexed = [((*path, key), value)] if not isinstance(value, list) else [((*path, key, j), v) for j, v in enumerate(value)]
            for where, layer in indexed:
                if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
                    continue  # wrong types and negative layers are the schema's to report
                n = num_layers()
                if n is None:
                    return
                if layer >= n:
                    report.add(
                        where,
                        f"layer {layer} is out of range: {model} has {n} layers, numbered 0 to {n - 1}",
                        f"use a layer from 0 to {n - 1}, or leave '{key}' out to use {name}'s default",
                    )


def check_model_needs(data: dict[str, Any], schema: dict[str, Any], model_config_of: Any, report: Reporter) -> None:
    """Each method must find in the model what it declares it needs; refused here, before any weight loads."""
    from keditlab.spec.model_needs import methods_that_fit, refusal

    model = _model_name(data, schema) if model_config_of is not None else None
    if model is None:
        return
    try:
        config = model_config_of(model)
    except Exception:  # noqa: BLE001 - an unreadable config is the loader's error to report, not the spec's
        config = None
    if not isinstance(config, dict):
        return
    defs = schema["$defs"]
    needs_of = {d["x-keditlab-method"]: d.get("x-keditlab-model-needs", []) for d in defs.values()
                if isinstance(d, dict) and "x-keditlab-method" in d}
    for path, name, _settings in method_entries(data):
        if name not in needs_of:
            continue  # an unknown method is the schema's to report
        why = refusal(name, needs_of[name], config)
        if why is None:
            continue
        fitting = methods_that_fit(config, needs_of)
        instead = (f"use a method that can: {', '.join(fitting)}" if fitting else
                   "no keditlab method can edit it yet; use a model with one MLP per block (llama, qwen2, mistral, gemma2, ...)")
        report.add(path, f"{name} cannot edit {model}: {why}",
                   f"{instead}; docs/models.md shows which method runs on which architecture")


class RunProblem(NamedTuple):
    """One problem with the run settings: the ``run`` key it is about, what is wrong, the fix.

    ``form`` is True for a value of the wrong kind (an unknown mode, a batch size
    of 0): the schema reports those for specs, so the spec check skips them; a
    Python caller, whose ``RunSettings`` no schema has seen, gets them all.
    """

    key: tuple[str | int, ...]
    message: str
    fix: str
    form: bool = False


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _every(evaluate_at: Any) -> Any:
    """``k`` of ``{every: k}``, or None when ``evaluate_at`` is not that form."""
    return evaluate_at.get("every") if isinstance(evaluate_at, Mapping) else None


def run_settings_problems(mode: Any, batch_size: Any, evaluate_at: Any, *, mode_given: bool = True) -> list[RunProblem]:
    """What is wrong with ``run.mode`` / ``run.batch_size`` / ``run.evaluate_at`` taken together.

    The rules (docs/runs.md):

    * ``mode`` is ``single``, ``batch`` or ``sequential``; ``batch_size`` a whole number ≥ 1;
    * ``single`` applies each edit alone, so its ``batch_size`` is 1;
    * ``evaluate_at`` is for ``sequential`` runs only (``None`` elsewhere);
    * ``{every: k}`` needs ``k`` to be a multiple of ``batch_size``: edits go on
      ``batch_size`` at a time, so the model never holds a count in between.

    ``mode_given=False`` says ``mode`` is the default (messages then say so).
    An empty list means the settings are fine.
    """
    problems: list[RunProblem] = []
    if mode not in RUN_MODES:
        problems.append(RunProblem(("mode",), f"unknown run mode {mode!r}{did_you_mean(str(mode), RUN_MODES)}",
                                   f"use one of: {quoted_list(RUN_MODES)}", form=True))
    if not _whole(batch_size) or batch_size < 1:
        problems.append(RunProblem(("batch_size",), f"batch_size must be a whole number of at least 1, got {batch_size!r}",
                                   "give 1 or more, or leave batch_size out for 1", form=True))
    every = _every(evaluate_at)
    if evaluate_at is not None and evaluate_at not in EVALUATE_AT and not (
            isinstance(evaluate_at, Mapping) and set(evaluate_at) == {"every"} and _whole(every) and every >= 1):
        problems.append(RunProblem(("evaluate_at",), f"evaluate_at must be {' or '.join(EVALUATE_AT)} or {{every: k}} "
                                   f"with k a whole number of at least 1, got {evaluate_at!r}",
                                   "write e.g. evaluate_at: after_all or evaluate_at: {every: 10}", form=True))
    if problems:
        return problems
    if mode == "single" and batch_size > 1:
        default = " (the default)" if not mode_given else ""
        problems.append(RunProblem(
            ("batch_size",),
            f"batch_size {batch_size} needs run.mode batch or sequential: run.mode is single{default}, "
            "which applies each edit alone",
            f"add `mode: batch` (each batch of {batch_size} edits applied in one call to the unedited model) or "
            f"`mode: sequential` (batches of {batch_size} applied one after another), or use batch_size 1",
        ))
    if evaluate_at is not None and mode != "sequential":
        problems.append(RunProblem(
            ("evaluate_at",),
            f"evaluate_at is for run.mode sequential only; in mode {mode} each "
            f"{'edit' if mode == 'single' else 'batch'} is measured right after it is applied, then undone",
            "remove evaluate_at, or use `mode: sequential` to keep the edits on the model and measure them as it says",
        ))
    elif every is not None and every % batch_size:
        lower = every // batch_size * batch_size
        multiples = " or ".join(str(m) for m in (lower, lower + batch_size) if m > 0)
        problems.append(RunProblem(
            ("evaluate_at", "every"),
            f"evaluate_at every {every} is not a multiple of batch_size {batch_size}: edits go on {batch_size} at a time, "
            f"so the model never holds exactly {every} edits",
            f"use a multiple of {batch_size} for every (e.g. {multiples}), or a batch_size that divides {every}",
        ))
    return problems


#: How each capability reads in a message: what a method without it cannot do.
_CANNOT = {
    "batch": "apply several edits in one call",
    "sequential": "edit sequentially (apply edits on top of its own earlier edits)",
}


def capability_problem(name: str, capabilities: Mapping[str, bool], mode: str, batch_size: int, *,
                       capable: Mapping[str, Sequence[str]] | None = None, shown: str | None = None,
                       where: Mapping[str, str] | None = None) -> RunProblem | None:
    """Why method ``name`` cannot run in ``mode`` with ``batch_size``; None when it can.

    ``capabilities`` is the method's :class:`~keditlab.methods.Capabilities` as a
    dict.  ``mode batch`` or a ``batch_size`` above 1 needs ``batch``; ``mode
    sequential`` needs ``sequential``.  The problem's ``key`` is the run setting
    that asks for the missing capability.  For the message: ``capable`` names,
    per capability, the methods that have it (to suggest one); ``shown`` is how
    the method is named (default ``'name'``; a label may be added); ``where``
    maps a run setting to text written after its name (`` (line 9)``).
    """
    capable, where, shown = capable or {}, where or {}, shown or f"'{name}'"

    def others(capability: str) -> str:
        names = [n for n in capable.get(capability, ()) if n != name]
        return f"a {capability} method such as {', '.join(names)}" if names else f"a method that can {_CANNOT[capability]}"

    if (mode == "batch" or batch_size > 1) and not capabilities.get("batch", False):
        if mode == "batch":
            return RunProblem(("mode",), f"method {shown} cannot {_CANNOT['batch']}, which run.mode batch{where.get('mode', '')} asks for",
                              "use run.mode single (or sequential, to keep each edit on the model) with batch_size 1, "
                              f"or {others('batch')}")
        return RunProblem(("batch_size",), f"method {shown} cannot {_CANNOT['batch']}, which run.batch_size {batch_size}"
                                           f"{where.get('batch_size', '')} asks for",
                          f"use batch_size 1 (the edits are then applied one at a time, one after another), or {others('batch')}")
    if mode == "sequential" and not capabilities.get("sequential", True):
        return RunProblem(("mode",), f"method {shown} cannot {_CANNOT['sequential']}, which run.mode sequential"
                                     f"{where.get('mode', '')} asks for",
                          f"use run.mode single or batch, or {others('sequential')}")
    return None


def _method_capabilities(schema: dict[str, Any]) -> dict[str, dict[str, bool]]:
    """Each method's capabilities as the schema carries them (``x-keditlab-capabilities``)."""
    defs = schema.get("$defs", {})
    return {
        name: defs.get(f"method-{name}", {}).get("x-keditlab-capabilities", {})
        for name in defs.get("method-name", {}).get("enum", [])
    }


def check_run_settings(data: dict[str, Any], schema: dict[str, Any], report: Reporter) -> None:
    """``run.mode``, ``batch_size`` and ``evaluate_at`` fit together, and every method can do what they ask."""
    run = data.get("run")
    run = run if isinstance(run, dict) else {}
    defaults = RunSettings()
    mode = run.get("mode", defaults.mode)
    batch_size = run.get("batch_size", defaults.batch_size)
    problems = run_settings_problems(mode, batch_size, run.get("evaluate_at"), mode_given="mode" in run)
    for problem in problems:
        if not problem.form:  # a value of the wrong kind was reported by the schema
            report.add(("run", *problem.key), problem.message, problem.fix)
    if problems:
        return
    capabilities = _method_capabilities(schema)
    capable = {c: [n for n, caps in capabilities.items() if caps.get(c)] for c in _CANNOT}
    positions = {key: report.source_map.value(("run", key)) for key in ("mode", "batch_size") if key in run}
    where = {key: f" (line {position.line})" for key, position in positions.items() if position}
    for path, name, settings in method_entries(data):
        if name not in capabilities:
            continue  # an unknown method is the schema's to report
        label = settings.get("label") if settings else None
        shown = f"'{label}' ({name})" if isinstance(label, str) and label and label != name else f"'{name}'"
        found = capability_problem(name, capabilities[name], mode, batch_size, capable=capable, shown=shown, where=where)
        if found:
            report.add((*path, "name") if settings else path, found.message, found.fix)
    if run.get("save_edits") is True:
        for path, name, settings in method_entries(data):
            if name in capabilities and not capabilities[name].get("saveable", True):
                report.add((*path, "name") if settings else path,
                           f"run.save_edits is on, but '{name}' makes its edits by what the model reads (a prompt), "
                           "so there is nothing to save",
                           "leave `save_edits` out of `run:`, or run this method in a spec of its own without it")
    if "method" not in data and DEFAULT_METHOD in capabilities:   # the method the spec gets without naming one
        found = capability_problem(DEFAULT_METHOD, capabilities[DEFAULT_METHOD], mode, batch_size, capable=capable,
                                   shown=f"'{DEFAULT_METHOD}' (the default: the spec names no method)", where=where)
        if found:
            key = "batch_size" if "batch_size" in run else "mode" if "mode" in run else None
            report.add(("run", key) if key else ("run",), found.message, f"name the method under `method:`, or {found.fix}")


def check_chat_context(data: dict[str, Any], report: Reporter) -> None:
    """``model.chat_template: on`` with ``evaluate.context: qa`` would frame a question twice: pick one."""
    model, evaluate = data.get("model"), data.get("evaluate")
    if isinstance(model, dict) and isinstance(evaluate, dict) and model.get("chat_template") == "on" and evaluate.get("context") == "qa":
        report.add(("evaluate", "context"), "context qa frames the question as text, but model.chat_template: on already "
                   "puts every prompt in a chat turn", "use `context: chat` (or `bare`) with the chat template, or "
                   "`chat_template: off` with `context: qa`")


#: An environment variable's name, as ``evaluate.judge.api_key_env`` must give it.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_judge(data: dict[str, Any], report: Reporter) -> None:
    """``evaluate.judge``: what its mapping's keys must say together (the schema checks each alone).

    ``api_key_env`` and ``timeout`` belong to an endpoint, so they need a
    ``url``; the ``url`` is an ``http(s)://`` base (keditlab adds
    ``/chat/completions``); ``api_key_env`` names a variable, never holds the
    key (which is not quoted back); and a judge needs the generation protocol,
    the only one it judges.
    """
    evaluate = data.get("evaluate")
    judge = evaluate.get("judge") if isinstance(evaluate, dict) else None
    if isinstance(judge, dict):
        url = judge.get("url")
        for key in ("api_key_env", "timeout"):
            if key in judge and url is None:
                report.add(("evaluate", "judge", key), f"{key} belongs to an endpoint judge, and this judge has no url "
                           "(without one, `model` is a local judge model)",
                           f"add `url: http://HOST:PORT/v1` (the endpoint's base URL), or remove {key}", at="key")
        if isinstance(url, str) and url.strip():
            if not re.match(r"https?://[^\s/]+", url.strip()):
                report.add(("evaluate", "judge", "url"), f"judge url {url!r} is not an http:// or https:// address",
                           f"write the endpoint's base URL, e.g. `url: http://{url.strip().split('://')[-1] or '127.0.0.1:8000/v1'}`")
            elif url.rstrip("/").endswith("/chat/completions"):
                report.add(("evaluate", "judge", "url"), "judge url names the chat-completions path; keditlab adds "
                           "`/chat/completions` to the base URL itself",
                           f"write `url: {url.rstrip('/')[: -len('/chat/completions')]}`")
        key_env = judge.get("api_key_env")
        if isinstance(key_env, str) and key_env.strip() and not _ENV_NAME.fullmatch(key_env):
            report.add(("evaluate", "judge", "api_key_env"), "api_key_env is not the name of an environment variable "
                       "(letters, digits and _; it names the variable that holds the key, never the key itself)",
                       "put the key in a variable (`export OPENAI_API_KEY=...`) and write `api_key_env: OPENAI_API_KEY`")
    protocols = evaluate.get("protocols") if isinstance(evaluate, dict) else None
    if judge not in (None, "rule") and isinstance(protocols, list) and "generation" not in protocols:
        report.add(("evaluate", "judge"), "a judge judges the generation protocol's answers, and evaluate.protocols "
                   "leaves generation out", "add `generation` to `protocols`, or remove `judge`", at="key")


def run_checks(data: Any, schema: dict[str, Any], report: Reporter, num_layers_of: NumLayersOf | None = None,
               model_config_of: Any = None) -> None:
    """Every check above, on whatever parts of ``data`` have the right shape."""
    if not isinstance(data, dict):
        return
    check_has_work(data, report.source, report)
    check_subjects(data, report)
    check_labels(data, report)
    check_case_ids(data, report)
    check_edits_file(data, report, schema)
    check_chat_context(data, report)
    check_judge(data, report)
    check_layers(data, schema, num_layers_of, report)
    check_model_needs(data, schema, model_config_of, report)
    check_run_settings(data, schema, report)
    check_general(data, report)


