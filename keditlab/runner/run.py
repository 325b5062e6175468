"""Turn a resolved :class:`~keditlab.spec.Spec` into work and a :class:`Run`.

One loop serves every run mode.  The schedule (:mod:`keditlab.runner.schedule`)
turns ``run.mode``, ``batch_size`` and ``evaluate_at`` into a list of steps,
and for every method the runner follows it::

    measure every case on the unedited model (once, shared by all methods)
    for each method:
        for step in plan(...):
            Apply(cases)    handle = method.apply(model, ..., cases)   # pushed on a stack
            Measure(cases)  post = measure(model, ..., cases, reference=pre)
            Restore()       pop every handle, last first: handle.restore()

``single`` is Apply/Measure/Restore per edit, ``batch`` the same per batch,
``sequential`` every Apply on top of the last and one Restore at the very end.
With ``evaluate.general`` the harness also reads the whole model before the edits and
at some of the Measure steps (:mod:`keditlab.runner.general_run` says which).
Nothing touches the model between an Apply and the Measure after it.  Whatever
happens (an error included), each method ends with the model restored, so the
next method, and the caller, get the unedited weights back bit for bit.

Settings a method cannot honour (``mode: batch`` with ROME, say) are a
:class:`RunError` before any work: before the model is loaded and before the
run folder is created.  So is a judge (``evaluate.judge``) that cannot be
asked: it is opened and asked one test question first (:func:`open_run_judge`).
The covariance statistics a method asks for are computed once per layer and
cached on disk (:mod:`keditlab.stats`); methods ask for them in their first
call, on the unedited model.

The result is a :class:`~keditlab.runner.result.Run` (the object a saved run
folder is read back as, :func:`keditlab.load_run`); what goes into
``manifest.json`` is :mod:`keditlab.runner.manifest`, the folder's files
:mod:`keditlab.runner.folder`.  ``Run``, ``MetricLookupError`` and
``MANIFEST_FORMAT`` are importable from here as before.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from keditlab.data.datasets import dataset_cases
from keditlab.evaluate import CaseMeasurement, measure
from keditlab.evaluate.judge import Judge, JudgeError, open_judge
from keditlab.models.sampling import device_of
from keditlab.methods import EditContext, EditHandle, EditMethod, MethodConfigError, NonFiniteEdit, get_method, method_names
from keditlab.methods.saved import MEMORY, load_edits, load_memory, save_edits, saveable
from keditlab.models import LoadedModel, load_model
from keditlab.models.precision import precision_warnings
from keditlab.models.tokens import answer_text, context_length, encode_prompt
from keditlab.runner import folder as run_folder
from keditlab.runner.chat import ChatTemplateError, chat_on, chat_prompt, map_prompts
from keditlab.runner.edit_warnings import ground_truth_warning, target_warning, unchanged_warning
from keditlab.runner.general_run import GeneralRun
from keditlab.runner.manifest import MANIFEST_FORMAT, finish_manifest, start_manifest, timestamp
from keditlab.runner.resume import Resumed, segments, tallies_from_records
from keditlab.runner.result import MetricLookupError, Run
from keditlab.runner.schedule import Apply, Measure, Restore, RunError, Step, last_measurements, plan
from keditlab.runner.summary import MethodTally, build_summary
from keditlab.runner.table_files import table_csv, table_markdown
from keditlab.spec import EditCase, MethodSpec, Spec
from keditlab.spec.rules import capability_problem
from keditlab.stats import CovarianceProvider

__all__ = ["MANIFEST_FORMAT", "MetricLookupError", "Run", "RunError", "open_run_judge", "resolve_auto_layers", "run_spec",
           "unrelated_pairs"]


def unrelated_pairs(spec: Spec, cases: Sequence[EditCase]) -> tuple[tuple[str, str], ...]:
    """The ``(prompt, answer)`` locality probes of ``stats.unrelated``'s records, minus every prompt the run itself reads.

    A preserving method holds these unchanged; a question the run measures (an
    edit prompt, a rephrase, any probe of its cases) is left out, so that no
    measured probe is protected directly.  Empty without ``stats.unrelated``.
    """
    source = spec.stats.unrelated
    if source is None:
        return ()
    records = dataset_cases(source.format, source.path, limit=source.limit, offset=source.offset, sample=source.sample,
                            on_bad_record=source.on_bad_record, skipped=[])
    measured = {text for case in cases for request in case.requests()   # each case and its joint edits
                for text in (request.prompt, *(probe.prompt for probe in request.probes()))}
    pairs = [(probe.prompt, probe.answer) for record in records for probe in record.locality if probe.prompt not in measured]
    return tuple(dict.fromkeys(pairs))


def run_spec(
    spec: Spec,
    out: str | Path | None = "runs",
    *,
    loaded: LoadedModel | None = None,
    log: Any = print,
    resume: Resumed | None = None,
) -> Run:
    """Run ``spec``; write a new run folder under ``out`` (``None``: keep results in memory only).

    Returns with the model (``loaded``, when given) restored to its unedited
    weights bit for bit, whatever the mode; docs/runs.md says which model each
    measurement was taken on.  ``resume`` (from :func:`keditlab.runner.resume.read_run_folder`)
    continues a stopped run in its own folder instead, skipping the work it finished.
    """
    started = time.time()
    if not spec.edits:
        raise RunError(f"spec {spec.name!r} has no edits to run" + (" (it only traces)" if spec.trace else "")
                       + ". Fix: add `edits:`, or use `keditlab trace SPEC` for its `trace:` section.")
    methods = [(m, get_method(m.name)) for m in spec.methods]
    steps = _schedule(spec, methods)  # an impossible request fails here, before any work
    if spec.run.save_edits:
        _check_saving(methods, out if resume is None else resume.folder)
    judge = open_run_judge(spec, log)  # a missing key or an unreachable judge fails here, before any edit
    general = GeneralRun.open(spec, log)  # single mode, no harness, an unknown task, its data out of reach: here too
    _seed_everything(spec.run.seed)
    if loaded is None:
        log(f"Loading {spec.model.name} …")
        loaded = load_model(spec.model.name, device=spec.run.device, dtype=spec.model.dtype, profile=spec.model.profile)
    model, tokenizer, profile = loaded
    for warning in precision_warnings(model):
        log(f"warning: {warning}")
    traced: dict[str, dict[str, Any]] = {}  # label -> evidence for a `layer(s): auto` setting
    configs = {}
    for m, method in methods:
        params, evidence = resolve_auto_layers(m.params, model, tokenizer, profile, seed=spec.run.seed, log=log,
                                             method=method)
        if evidence is not None:
            traced[m.label] = evidence
            log(f"[{m.label}] {', '.join(f'{k}: auto -> {v}' for k, v in evidence['settings'].items())} "
                f"(largest mean MLP effect at the subject's last token over {evidence['facts']} traced facts"
                + (", cached" if evidence["cached"] else "") + ")")
        configs[m.label] = _config_for(method, dataclasses.replace(m, params=params), profile.num_layers)
    chat = chat_on(spec.model.chat_template, spec.evaluate.context)
    cases = list(spec.edits)
    if chat:  # the same prompts for editing and evaluation (keditlab.runner.chat)
        written: dict[str, str] = {}   # each prompt in its chat form -> as written, the question the judge is shown

        def in_chat(text: str) -> str:
            chatted = chat_prompt(tokenizer, text)
            written[chatted] = text
            return chatted
        try:
            cases = [map_prompts(case, in_chat) for case in cases]
        except ChatTemplateError as exc:
            raise RunError(str(exc)) from None
        if judge is not None:
            judge.questions.update(written)

    check_context(cases, tokenizer, model, spec.evaluate)  # before a folder is made or a weight is read

    tallies: dict[str, MethodTally] = {}
    case_records: list[dict[str, Any]] = []
    if resume is None:
        folder = run_folder.new_run_folder(out, spec.name) if out is not None else None
        manifest = start_manifest(spec, loaded, {
            m.label: {"name": m.name, "settings": configs[m.label].to_dict(),
                      **({"traced_layer": traced[m.label]} if m.label in traced else {})} for m, _ in methods},
            chat=chat, started=started)
    else:
        folder, manifest = resume.folder, resume.manifest
        _take_up(resume, spec, methods, steps, configs, cases, tallies, case_records, started, log)
    if judge is not None:   # which judge gave the generation figures, and the prompt it was sent (never its key)
        manifest["judge"] = judge.describe()
    if general is not None:   # the harness's version, the tasks and the knowns file (its sha256 and source)
        manifest["general"] = general.describe()
        if resume is not None:
            general.take_up(resume.folder, case_records)   # the measurements of the kept work
    lock = _hold(folder)
    if folder:
        if resume is not None:
            run_folder.write_jsonl(folder / "cases.jsonl", case_records)  # the kept records; the rest is done again
        run_folder.write_json(folder / "manifest.json", manifest)

    covariance = CovarianceProvider(model, tokenizer, profile, spec.stats.corpus, spec.stats.samples,
                                    spec.stats.max_length, seed=spec.run.seed)

    def close(status: str, error: BaseException | None = None) -> Run:
        """Write the summary of what was measured, the tables and the manifest with the run's status."""
        summary = build_summary(spec.name, spec.model.name, len(cases), tallies,
                                spec.edits_from.describe(len(cases)) if spec.edits_from else None,
                                spec.edits_from.format if spec.edits_from else None,
                                judge=judge.name if judge is not None else None)
        if general is not None:   # its rows (general:<task>, lm-eval:<metric>) beside the edit metrics, never among them
            general.add_to_summary(summary)
        if status != "complete":
            summary["status"] = status
        finish_manifest(manifest, covariance.described, started, status=status, error=error)
        if folder:
            run_folder.write_json(folder / "summary.json", summary)
            (folder / "table.csv").write_text(table_csv(summary), encoding="utf-8")
            (folder / "table.md").write_text(table_markdown(summary), encoding="utf-8")
            run_folder.write_json(folder / "manifest.json", manifest)
        return Run(summary=summary, cases=case_records, manifest=manifest, path=folder)

    try:
        unrelated = unrelated_pairs(spec, spec.edits)
        if chat:   # held in the form the edits are read in
            unrelated = tuple((chat_prompt(tokenizer, prompt), answer) for prompt, answer in unrelated)
        if spec.stats.unrelated is not None:
            log(f"Holding {len(unrelated)} unrelated questions from {spec.stats.unrelated.path} "
                "(their locality probes; questions this run measures left out)")
        context = EditContext(seed=spec.run.seed, covariance=covariance, unrelated=unrelated)
        log(f"Measuring {len(cases)} cases before editing …")
        before = measure(model, tokenizer, cases, spec.evaluate, progress=True, judge=judge)
        pre_warnings = {case.case_id: ground_truth_warning(case, pre, spec.evaluate.protocols) for case, pre in zip(cases, before)}
        for warning in filter(None, pre_warnings.values()):
            log(f"warning: {warning['message']}")
        if general is not None:
            general.measure_before(model, tokenizer, folder)
        _edit_and_measure(spec, methods, steps, configs, cases, before, pre_warnings, last_measurements(steps), tallies,
                          case_records, loaded, context, folder, log, resume, judge, general)
        return close("complete")
    except BaseException as exc:   # Interrupt, a kill signal Python sees, an error: what was measured is kept, and says so
        status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
        close(status, exc)
        if folder:
            log(f"the run stopped ({status}); what it measured is in {folder} (status: {status} in manifest.json). "
                f"Continue it with: keditlab run --resume {folder}")
        raise
    finally:
        _release(lock)   # after the folder's last file is written


def _check_saving(methods: list[tuple[MethodSpec, EditMethod]], out: Any) -> None:
    """``run.save_edits`` needs a run folder and methods whose edits are weights (:func:`keditlab.methods.saved.saveable`)."""
    if out is None:
        raise RunError("run.save_edits: true needs a run folder to save into, and this run keeps its results in memory "
                       "(out=None). Fix: give `out`, or leave save_edits off.")
    for method_spec, method in methods:
        why = saveable(method)
        if why:
            raise RunError(f"method {method_spec.label!r}: run.save_edits: {why}.")


def _save_call(handles: list[EditHandle], folder: Path, label: str, name: str, config: Any, cases: list[EditCase],
               step: Apply, memory: Any, keep_memory: bool) -> Path:
    """Save one method call's edits (:mod:`keditlab.methods.saved`), with what a resumed run needs to stand it in:
    its details and seconds, and (``keep_memory``: a sequential stream, whose later calls build on it) the method's
    memory between calls as the call left it (``memory``, when it keeps one).

    A resumed run doing a call again replaces what the stopped run may have saved of it (the same call, made again).
    """
    target = run_folder.saved_call(folder, label, step.batch)
    if target.exists():
        shutil.rmtree(target)
    handle = _joined(handles)
    return save_edits(handles, target, method=name, settings=config.to_dict(), cases=[case.case_id for case in cases],
                      call={"details": run_folder.plain_json(handle.details), "seconds": handle.seconds,
                            "setup_seconds": handle.setup_seconds, "memory_between_calls": bool(memory)},
                      memory=memory if memory and keep_memory else None)


def _memory_restorer(context: EditContext, name: str) -> Any:
    """A function that puts ``context.memory[name]`` back to what it is now (absent included): a resumed stream
    replaces the method's memory with its checkpoint's, and restoring the stream's first call undoes that."""
    missing = object()
    before = context.memory.get(name, missing)

    def put_back() -> None:
        if before is missing:
            context.memory.pop(name, None)
        else:
            context.memory[name] = before
    return put_back


def _hold(folder: Path | None) -> Any:
    """A held lock on the run folder (the caller releases it), so that a run is never resumed while it is going on."""
    if folder is None:
        return _NoLock()
    lock = FileLock(str(folder / ".running.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunError(f"the run in {folder} is going on in another process. Fix: wait for it to end, or stop it "
                       "(Ctrl-C, `kill PID`) before resuming.") from None
    return lock


class _NoLock:
    def release(self) -> None:
        pass


def _release(lock: Any) -> None:
    """Release the run folder's lock and take its file away: a finished run folder holds only the run's files."""
    lock.release()
    path = getattr(lock, "lock_file", None)
    if path:
        Path(path).unlink(missing_ok=True)


def _take_up(resume: Resumed, spec: Spec, methods, steps, configs, cases, tallies: dict[str, MethodTally],
             case_records: list[dict[str, Any]], started: float, log: Any) -> None:
    """Set a resumed run going from what its folder holds: the finished segments' records and their counts."""
    labels = [m.label for m, _ in methods]
    recorded = {label: settings.get("settings") for label, settings in resume.manifest.get("methods", {}).items()}
    changed = [label for label in labels if recorded.get(label) not in (None, run_folder.plain_json(configs[label].to_dict()))]
    if changed or set(recorded) - set(labels):
        raise RunError(f"the settings the run in {resume.folder} recorded differ from what its spec resolves to now "
                       f"(methods {', '.join(changed or sorted(set(recorded) - set(labels)))}; a newer keditlab changed "
                       "a default?), so its finished records and new ones would not be one run. Fix: run the spec again "
                       "into a new folder.")
    resume.plan(labels, steps, [case.case_id for case in cases],
                checkpoints=spec.run.mode == "sequential" and spec.run.save_edits)
    for m, _ in methods:
        if any(record["method"] == m.label for record in resume.kept):
            tallies[m.label] = MethodTally(m.name, configs[m.label].to_dict(), spec.run.mode, spec.run.batch_size,
                                           spec.run.evaluate_at)
    last = last_measurements(steps)   # case index -> its last measurement, the same for every method
    tallies_from_records(tallies, resume.kept, {(label, cases[i].case_id): point for label in tallies for i, point in last.items()})
    case_records.extend(resume.kept)
    resume.manifest.update(status="running")
    resume.manifest.pop("error", None)
    resume.manifest.setdefault("resumed", []).append({"at": timestamp(started), "kept_records": len(resume.kept),
                                                      "dropped_records": len(resume.records) - len(resume.kept)})
    total = len(segments(steps))
    noun = {"single": ("edit", "edits"), "batch": ("batch", "batches")}.get(spec.run.mode, ("stream", "streams"))[total != 1]
    if spec.run.mode == "sequential":
        calls = sum(isinstance(step, Apply) for step in steps)
        done_text = lambda label: (f"[{label}] stream done" if resume.done[label] else  # noqa: E731
                                   f"[{label}] resumes after call {sum(isinstance(s, Apply) for s in steps[:resume.replay[label] + 1])} of {calls} (its checkpoint)"
                                   if resume.replay.get(label, -1) >= 0 else f"[{label}] stream done again from the start")
    else:
        done_text = lambda label: f"[{label}] {len(resume.done[label])} of {total} {noun} done"  # noqa: E731
    log(f"Resuming {resume.folder}: " + "; ".join(done_text(label) for label in labels)
        + f" ({len(resume.kept)} records kept, {len(resume.records) - len(resume.kept)} to measure again)")


def _edit_and_measure(spec: Spec, methods, steps, configs, cases, before, pre_warnings, last_point,
                      tallies: dict[str, MethodTally], case_records: list[dict[str, Any]], loaded: LoadedModel,
                      context: EditContext, folder: Path | None, log: Any, resume: Resumed | None = None,
                      judge: Judge | None = None, general: GeneralRun | None = None) -> None:
    """Every method through the schedule: apply, measure, restore (module docstring); results go into
    ``tallies`` and ``case_records`` (and the folder's ``cases.jsonl``) as they are measured.

    A resumed run (``resume``) skips the schedule's segments it finished before (``resume.done``, per method label;
    :func:`keditlab.runner.resume.segments`), whose records are already in ``tallies``; a sequential stream
    with a checkpoint loads the calls up to it from their saved edits (``resume.replay``: the last step the
    checkpoint covers; ``resume.refused``: case ids whose call was refused) and keeps its measurements.
    ``judge`` judges the generation protocol's answers (None: the rules); ``general`` measures the general
    ability at the measurements it chooses (:mod:`keditlab.runner.general_run`; None: not asked for).
    """
    resume = resume or Resumed(Path(), {}, [])   # a fresh run: nothing done before
    model, tokenizer, profile = loaded
    for method_spec, method in methods:
        label = method_spec.label
        tally = tallies.get(label) or MethodTally(method_spec.name, configs[label].to_dict(), spec.run.mode,
                                                  spec.run.batch_size, spec.run.evaluate_at)
        tallies[label] = tally
        segment = 0                                              # segments end at each Restore
        stack: list[EditHandle] = []                             # what is on the model now, first applied first
        applied: dict[int, tuple[Apply, EditHandle]] = {}        # case index -> the call that applied it
        failed: set[int] = set()                                 # cases whose call was refused (a non-finite update)
        saved_calls: list[Path] = []                             # the saved calls of this stream (run.save_edits)
        try:
            for index, step in enumerate(steps):
                if segment in resume.done.get(label, ()):
                    segment += isinstance(step, Restore)
                    continue
                if index <= resume.replay.get(label, -1):   # a resumed stream: its checkpoint stands in for what it did
                    if isinstance(step, Apply) and all(cases[i].case_id in resume.refused.get(label, ()) for i in step.cases):
                        failed.update(step.cases)
                    elif isinstance(step, Apply):
                        call_folder = run_folder.saved_call(folder, label, step.batch)
                        handle = load_edits(model, call_folder)
                        if not stack:   # the stream's memory goes back to what it was when the first call is restored
                            handle.on_restore.append(_memory_restorer(context, method_spec.name))
                        stack.append(handle)
                        saved_calls.append(call_folder)
                        memory = load_memory(call_folder, device=device_of(model))
                        if memory is not None:   # the method's memory as this call left it (only the checkpoint's is kept)
                            context.memory[method_spec.name] = memory
                        applied.update((i, (step, handle)) for i in step.cases)
                    continue
                if isinstance(step, Apply):
                    log(_apply_message(label, step, cases, len(stack)))
                    seed_call(spec.run.seed)
                    try:
                        handles = _apply_calls(method, loaded, _calls([cases[i] for i in step.cases]), configs[label], context)
                    except NonFiniteEdit as exc:   # rolled back (methods/transaction.py): counted, and the run goes on
                        log(f"warning: [{label}] {exc}")
                        failed.update(step.cases)
                        tally.add_failed(len(step.cases))
                        for i in step.cases:
                            record = _failed_record(label, method_spec.name, spec.run.mode, cases[i], step, str(exc))
                            case_records.append(record)
                            if folder:
                                run_folder.append_jsonl(folder / "cases.jsonl", record)
                        continue
                    stack.extend(handles)
                    handle = _joined(handles)
                    if spec.run.save_edits and folder:
                        saved_calls.append(_save_call(handles, folder, label, method_spec.name, configs[label],
                                                      [cases[i] for i in step.cases], step, context.memory.get(method_spec.name),
                                                      keep_memory=spec.run.mode == "sequential"))
                    applied.update((i, (step, handle)) for i in step.cases)
                    tally.add_batch(len(step.cases), handle.seconds, handle.setup_seconds)
                elif isinstance(step, Measure):
                    # refused edits are not on the model: a sequential stream holds the scheduled edits less those
                    step = dataclasses.replace(step, cases=tuple(i for i in step.cases if i not in failed),
                                               edits_applied=step.edits_applied - (len(failed) if spec.run.mode == "sequential" else 0))
                    if not step.cases:   # every case of it failed to apply: nothing to measure
                        continue
                    if len(step.cases) > 1 and spec.run.mode == "sequential":
                        log(f"[{label}] measuring {len(step.cases)} edits with {step.edits_applied} on the model …")
                    eval_start = time.perf_counter()
                    # the before/after text only where it is read: at a case's last measurement (the warnings' too)
                    posts = measure(model, tokenizer, [cases[i] for i in step.cases], spec.evaluate,
                                    reference=[before[i] for i in step.cases], context=_reading_context(stack), progress=True,
                                    text=any(last_point[i] == step.point for i in step.cases), judge=judge)
                    eval_seconds = time.perf_counter() - eval_start
                    changed = _changed_parameters(model, stack)
                    if general is not None and general.measures_at(steps, step):   # before the records: a run stopped
                        general.measure_after(label, step, model, tokenizer, folder,  # in between measures both again
                                              reads_context=_reading_context(stack) is not None)
                    tally.add_point(step.edits_applied, [post.scores() for post in posts], eval_seconds)
                    for i, post in zip(step.cases, posts):
                        case, pre = cases[i], before[i]
                        warnings = [pre_warnings[case.case_id]] if pre_warnings[case.case_id] else []
                        if last_point[i] == step.point:  # the measurement the summary and the warnings use
                            for check in (unchanged_warning(label, case, pre, post), target_warning(label, case, post)):
                                if check:
                                    log(f"warning: {check['message']}")
                                    warnings.append(check)
                            tally.add_case(pre.scores(), post.scores(), [w["code"] for w in warnings])
                        batch, handle = applied[i]
                        record = _case_record(label, method_spec.name, spec.run.mode, case, pre, post, batch, handle, step,
                                              eval_seconds / len(step.cases), changed)
                        record["warnings"] = warnings
                        case_records.append(record)
                        if folder:
                            run_folder.append_jsonl(folder / "cases.jsonl", record)
                    # this measurement is a checkpoint: only the memory of the last call made before it is needed
                    for saved in saved_calls[:-1]:
                        (saved / MEMORY).unlink(missing_ok=True)
                    del saved_calls[:-1]
                elif isinstance(step, Restore):
                    _restore(stack)
                    segment += 1
        finally:
            _restore(stack)  # also after an error: the caller gets the unedited model back


def open_run_judge(spec: Spec, log: Any = print) -> Judge | None:
    """The run's judge (``evaluate.judge``), opened and asked one test question before anything is edited.

    None with the rules, or when the generation protocol is not measured.  A
    judge model that cannot be loaded, an unset key variable, an endpoint that
    cannot be reached or refuses the request, a reply that is neither yes nor
    no: each is a :class:`RunError` naming the spec field, the URL and the fix
    (:mod:`keditlab.evaluate.judge`), raised before the model to edit is loaded.
    """
    if spec.evaluate.judge.kind == "rule" or "generation" not in spec.evaluate.protocols:
        return None
    where = spec.evaluate.judge.url or spec.evaluate.judge.model
    log(f"Checking the judge ({spec.evaluate.judge.kind} {where}) …")
    try:
        judge = open_judge(spec.evaluate.judge, device=spec.run.device, batch_size=spec.evaluate.batch_size)
        verdict = judge.check()
    except JudgeError as exc:
        raise RunError(str(exc)) from None
    if verdict.verdict != "yes":
        log(f"warning: the judge {judge.name} said {verdict.reply!r} to a test question whose answer is yes; its "
            "verdicts may not mean what they should (docs/protocols.md, The judge)")
    return judge


def check_context(cases: Sequence[EditCase], tokenizer: Any, model: Any, evaluate: Any) -> None:
    """Refuse, with the cases named, edits whose prompts and answers do not fit in the model's context.

    Every prompt a run reads (the edit prompt, its rephrases and its probes) is
    measured with the longest text that follows it: an answer, and where those
    are measured, a generated answer (``evaluate.answer_tokens``) and the fluency
    text (``evaluate.max_new_tokens``).  A model with learned positions (GPT-2)
    would otherwise fail deep inside its embedding; one with rotary positions
    would silently read positions it never saw in training.
    """
    limit = context_length(model)
    if limit is None:
        return
    generated = max(evaluate.answer_tokens if "generation" in evaluate.protocols else 0,
                    evaluate.max_new_tokens if "fluency" in evaluate.metrics else 0)
    too_long = []
    for case in cases:
        prompts = [case.prompt, *case.rephrase, *(probe.prompt for probe in (*case.locality, *case.portability))]
        answers = [case.target, *filter(None, [case.ground_truth]), *(probe.answer for probe in (*case.locality, *case.portability))]
        longest_answer = max(len(tokenizer(answer_text(a), add_special_tokens=False)["input_ids"]) for a in answers)
        longest_prompt = max(len(encode_prompt(tokenizer, p)) for p in prompts)
        if longest_prompt + max(longest_answer, generated) > limit:
            too_long.append((case.case_id, longest_prompt + max(longest_answer, generated)))
    if too_long:
        named = ", ".join(f"{case_id!r} ({tokens} tokens)" for case_id, tokens in too_long[:5])
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        raise RunError(
            f"{len(too_long)} edit case(s) do not fit in the model's context of {limit} tokens: {named}{more} "
            f"(the longest prompt, rephrase or probe of each, plus its answer"
            + (f" or the {generated} generated tokens" if generated else "") + "). "
            "Fix: shorten those prompts, leave the cases out (edits: limit/offset, or on_bad_record), "
            "lower evaluate.answer_tokens / evaluate.max_new_tokens, or use a model with a longer context."
        )


def _calls(cases: list[Any]) -> list[list[Any]]:
    """The method calls that apply ``cases``: one call for all, or, when a case has joint edits
    (MQuAKE), one call per edit, each on top of the last, so every method can apply them."""
    requests = [request for case in cases for request in case.requests()]
    return [cases] if len(requests) == len(cases) else [[request] for request in requests]


def _apply_calls(method: EditMethod, loaded: LoadedModel, calls: list[list[Any]], config: Any,
                 context: EditContext) -> list[EditHandle]:
    """The handles of one Apply step's calls; if one call fails, the calls before it are undone too (the step is
    all or nothing; each call already rolls itself back)."""
    model, tokenizer, profile = loaded
    handles: list[EditHandle] = []
    try:
        for call in calls:
            handles.append(method.apply(model, tokenizer, profile, call, config, context))
    except BaseException:
        _restore(handles)
        raise
    return handles


def _failed_record(label: str, name: str, mode: str, case: Any, batch: Apply, message: str) -> dict[str, Any]:
    """The ``cases.jsonl`` line of an edit whose call was refused and rolled back: what failed and why, no scores."""
    return {"method": label, "method_name": name, "case_id": case.case_id, "mode": mode, "batch": batch.batch,
            "batch_size": len(batch.cases), "edit": dataclasses.asdict(case),
            "failed": {"code": "edit_failed", "message": message},
            "warnings": [{"code": "edit_failed", "message": message}]}


def _joined(handles: list[EditHandle]) -> EditHandle:
    """The handle a record reports for one Apply step: the only one, or the first with the seconds of all."""
    if len(handles) == 1:
        return handles[0]
    first = handles[0]
    return dataclasses.replace(first, seconds=sum(h.seconds for h in handles),
                               setup_seconds=sum(h.setup_seconds for h in handles),
                               details={**first.details, "joint_calls": len(handles)})


def _schedule(spec: Spec, methods: list[tuple[MethodSpec, EditMethod]]) -> list[Step]:
    """The run's plan, after checking that every method can follow it.

    A spec file's run settings were checked by the validator, with line
    numbers (:func:`keditlab.spec.rules.check_run_settings`); a ``Spec`` built
    in Python skips the validator, so the runner asks the same two questions
    once, with the same words, as a :class:`RunError`: :func:`plan` refuses
    settings that do not fit together (its :class:`ScheduleError` is a
    ``RunError``), then each method must be capable of the mode.
    """
    run = spec.run
    steps = plan(len(spec.edits), run.mode, run.batch_size, run.evaluate_at)
    capable = {c: [n for n in method_names() if getattr(get_method(n).capabilities, c)] for c in ("batch", "sequential")}
    for method_spec, method in methods:
        shown = f"'{method_spec.label}'" + (f" ({method_spec.name})" if method_spec.label != method_spec.name else "")
        problem = capability_problem(method_spec.name, method.capabilities.to_dict(), run.mode, run.batch_size,
                                     capable=capable, shown=shown)
        if problem:
            raise RunError(f"{problem.message}. Fix: {problem.fix}.")
    return steps


def resolve_auto_layers(params: dict[str, Any], model: Any, tokenizer: Any, profile: Any, *, seed: int = 0,
                        log: Any = None, method: Any = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``params`` with ``layer: auto`` / ``layers: auto`` replaced by traced layers, and the evidence (None if no ``auto``).

    The layer is :func:`keditlab.trace.auto_layer.traced_layer` (traced once
    per model, cached); what ``auto`` then means is the method's to say
    (:meth:`~keditlab.methods.base.EditMethod.auto_layer_settings`): ROME's
    ``layer`` is the traced layer, MEMIT's ``layers`` keep their default
    number and end at it.  ``method`` is the :class:`EditMethod` (or its
    registered name) the settings belong to; without it, the registered
    method whose config lets that setting be ``auto`` answers
    (:func:`keditlab.methods.auto_layer_method`).
    """
    wanted = [key for key in ("layer", "layers") if params.get(key) == "auto"]
    if not wanted:
        return params, None
    from keditlab.methods import auto_layer_method, get_method
    from keditlab.trace.auto_layer import traced_layer

    found = traced_layer(model, tokenizer, profile, seed=seed, log=log)
    resolved = dict(params)
    for key in wanted:
        owner = get_method(method) if isinstance(method, str) else method or auto_layer_method(key)
        resolved[key] = owner.auto_layer_settings(found.layer, profile.num_layers)[key]
    return resolved, {"settings": {key: resolved[key] for key in wanted}, **found.to_dict()}


def _apply_message(label: str, step: Apply, cases: list[Any], on_model: int) -> str:
    """The log line for one method call: the edit itself when alone, else which edits and on top of what."""
    if len(step.cases) == 1:
        case = cases[step.cases[0]]
        text = f"[{label}] edit {step.cases[0] + 1}/{len(cases)}: {case.prompt!r} → {case.target!r}"
    else:
        text = f"[{label}] batch {step.batch + 1}: edits {step.cases[0] + 1}–{step.cases[-1] + 1} of {len(cases)}"
    return text + (f" (on top of {on_model} earlier call{'s' if on_model != 1 else ''})" if on_model else "")


def _restore(stack: list[EditHandle]) -> None:
    """Undo every handle on the stack, last applied first: the model is unedited again, bit for bit."""
    while stack:
        stack.pop().restore()


def _reading_context(stack: list[EditHandle]) -> Any:
    """The context the newest applied handle places before prompts (IKE), or ``None`` for weight edits."""
    return next((h.context for h in reversed(stack) if h.context is not None and not h.restored), None)


def _changed_parameters(model: torch.nn.Module, stack: list[EditHandle]) -> dict[str, float]:
    """Frobenius norm of (weights now − unedited weights) for each parameter the edits on the model wrote.

    The unedited value of a parameter is the copy taken by the first handle that
    changed it (later handles copied already edited values).
    """
    originals: dict[str, torch.Tensor] = {}
    for handle in stack:
        for name, original in handle.originals.items():
            originals.setdefault(name, original)
    params = dict(model.named_parameters())
    return {name: float((params[name].detach() - original.to(params[name].device)).float().norm())
            for name, original in originals.items()}


def _config_for(method: Any, method_spec: Any, num_layers: int) -> Any:
    """The method's config from the spec's settings, checked against the real model before any work."""
    config = method.config_class.from_params(method_spec.params)
    try:
        config.check_layers(num_layers)
    except MethodConfigError as exc:
        raise RunError(f"method {method_spec.label!r}: {exc}") from None
    return config


def _case_record(label: str, name: str, mode: str, case: Any, pre: CaseMeasurement, post: CaseMeasurement, batch: Apply,
                 handle: EditHandle, point: Measure, eval_seconds: float, changed: dict[str, float]) -> dict[str, Any]:
    """One line of ``cases.jsonl``: one case at one evaluation point (docs/results.md names every key)."""
    pre_scores, post_scores = pre.scores(), post.scores()
    size = len(batch.cases)
    return {
        "method": label,
        "method_name": name,
        "case_id": case.case_id,
        "mode": mode,
        "batch": batch.batch,
        "batch_size": size,
        "edits_applied": point.edits_applied,
        "point": point.point,
        "edit": dataclasses.asdict(case),
        "scores": [
            {"metric": m, "protocol": p, "pre": pre_scores.get((m, p)), "post": post_scores.get((m, p))}
            for (m, p) in sorted(set(pre_scores) | set(post_scores))
        ],
        "pre": pre.to_dict(),
        "post": post.to_dict(),
        "edit_seconds": round(handle.seconds / size, 3),
        "batch_edit_seconds": round(handle.seconds, 3),
        "setup_seconds": round(handle.setup_seconds / size, 3),
        "eval_seconds": round(eval_seconds, 3),
        "changed_parameters": changed,
        "details": _case_details(handle.details, case.case_id),
    }


def _case_details(details: dict[str, Any], case_id: str) -> dict[str, Any]:
    """The handle's details for one case: everything but the per-case list, plus this case's own entry.

    A method that reports per case puts a list under ``details["cases"]``, each
    entry with its ``case_id``; a record keeps only its own entry (as a list of
    one), so a batch of 100 does not repeat 100 entries in every record.
    """
    own = {key: value for key, value in details.items() if key != "cases"}
    entries = details.get("cases")
    if isinstance(entries, list):
        mine = [e for e in entries if isinstance(e, dict) and e.get("case_id") == case_id]
        if mine:
            own["cases"] = mine
    return own


def seed_call(seed: int) -> None:
    """Seed every random generator before a method call, the same for each call: a call's result then does not
    depend on the calls before it in this process (a resumed run gives what an uninterrupted one gives, and an
    edit measured alone gives what it gives inside a longer run).  Methods that draw (LoRA's initial adapters,
    WISE's masks) draw the same numbers in each call."""
    _seed_everything(seed)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
