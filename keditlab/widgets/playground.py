"""``EditPlayground(model)``: make one edit by hand, see what it did, undo it.

Fields for the edit (prompt, subject, target) and its probes (rephrases,
locality and portability, one per line as ``prompt | answer``), a method picker
filled from the method registry, and two buttons:

**Edit**
    measures every probe on the model as it is, applies the edit with the
    chosen method (:func:`keditlab.apply_edit`, the public entry point), and
    measures again: each probe's teacher-forced value and greedy generation,
    before and after, pass or fail.
**Undo**
    restores the last edit (every method returns a restorable
    :class:`~keditlab.methods.EditHandle`; edits stack, and are undone last
    first) and shows the probes again, which match their "before" once more.

The work behind the buttons is plain methods, :meth:`EditPlayground.edit` and
:meth:`EditPlayground.undo`, which return an :class:`EditResult`: a notebook
(or a test) can drive the playground without clicking.  Long steps (measuring,
editing, the one-off statistics some methods need) show a ``tqdm.auto``
progress bar in the playground's log area.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from keditlab.widgets import require_notebook_extra

require_notebook_extra("keditlab.EditPlayground")

from keditlab.widgets.static import STYLE, _fmt, _mark  # noqa: E402 - after the check, so a missing package is named with its fix

#: The default edit shown in a new playground: a fact SmolLM2-135M knows.
DEFAULT_EDIT = {
    "prompt": "The Eiffel Tower is located in the city of",
    "subject": "Eiffel Tower",
    "target": "Rome",
    "rephrase": "The Eiffel Tower can be found in the city of",
    "locality": "The capital of Japan is | Tokyo",
    "portability": "The Eiffel Tower is located in the country of | Italy",
}


@dataclass
class ProbeOutcome:
    """One probe before and after: its teacher-forced value and greedy generation."""

    kind: str
    prompt: str
    answer: str
    before: float | None
    after: float | None
    generation_before: str
    generation_after: str

    @property
    def passed(self) -> bool | None:
        return None if self.after is None else self.after >= 1.0 - 1e-9


@dataclass
class EditResult:
    """What one Edit (or Undo) click did: the method, the probes before and after, the edits now on the model."""

    action: str                   # "edit" or "undo"
    method: str
    probes: list[ProbeOutcome] = field(default_factory=list)
    edits_on_model: int = 0
    seconds: float = 0.0

    def generations_after(self) -> dict[str, str]:
        return {p.prompt: p.generation_after for p in self.probes}


def parse_probes(text: str, kind: str) -> list[tuple[str, str]]:
    """``prompt | answer`` lines → pairs; a line without ``|`` is an error naming the line and the fix."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "|" not in line:
            raise ValueError(f"{kind} line {number} {line.strip()!r} has no answer; write it as 'prompt | answer'")
        prompt, answer = (part.strip() for part in line.rsplit("|", 1))
        if not prompt or not answer:
            raise ValueError(f"{kind} line {number} needs both a prompt and an answer: 'prompt | answer'")
        pairs.append((prompt, answer))
    return pairs


class EditPlayground:
    """A small editing bench for a loaded model; display it in a notebook (it is its own widget).

    ``model`` is what :func:`keditlab.load_model` returns (``(model, tokenizer,
    profile)``) or a model name to load.  ``methods`` limits the picker (default:
    every registered method); ``settings`` are per-method settings, e.g.
    ``{"ft-m": {"steps": 20}}``.
    """

    def __init__(self, model: Any = "smollm2-135m", *, methods: list[str] | None = None,
                 settings: dict[str, dict[str, Any]] | None = None, method: str = "rome", max_new_tokens: int = 12) -> None:
        import ipywidgets as w

        from keditlab.methods import method_names

        if isinstance(model, str):
            from keditlab import load_model

            model = load_model(model)
        self.model, self.tokenizer, self.profile = model
        self.settings = dict(settings or {})
        self.max_new_tokens = max_new_tokens
        self.handles: list[Any] = []
        self.history: list[EditResult] = []
        self._covariance = None
        names = methods or method_names()
        if method not in names:
            method = names[0]
        area = {"layout": w.Layout(width="640px", height="52px")}
        self.prompt = w.Text(DEFAULT_EDIT["prompt"], description="prompt", layout=w.Layout(width="640px"))
        self.subject = w.Text(DEFAULT_EDIT["subject"], description="subject")
        self.target = w.Text(DEFAULT_EDIT["target"], description="target")
        self.rephrase = w.Textarea(DEFAULT_EDIT["rephrase"], description="rephrases", placeholder="one per line", **area)
        self.locality = w.Textarea(DEFAULT_EDIT["locality"], description="locality", placeholder="prompt | answer, one per line", **area)
        self.portability = w.Textarea(DEFAULT_EDIT["portability"], description="portability", placeholder="prompt | answer", **area)
        self.method = w.Dropdown(options=names, value=method, description="method")
        self.edit_button = w.Button(description="Edit", button_style="primary", icon="pencil")
        self.undo_button = w.Button(description="Undo", icon="undo", disabled=True)
        self.status = w.HTML("<small>no edit on the model</small>")
        self.log = w.Output()
        self.result = w.HTML()
        self.edit_button.on_click(lambda _: self._click(self.edit))
        self.undo_button.on_click(lambda _: self._click(self.undo))
        self.widget = w.VBox([self.prompt, w.HBox([self.subject, self.target]), self.rephrase, self.locality,
                              self.portability, w.HBox([self.method, self.edit_button, self.undo_button, self.status]),
                              self.log, self.result])
        self.widget.add_class("keditlab-playground")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- what the buttons do ---------------------------------------------------------------------------------

    def case(self) -> Any:
        """The :class:`~keditlab.spec.EditCase` the fields describe (a clear ``ValueError`` for a malformed probe)."""
        from keditlab.spec.types import EditCase, Probe

        for name in ("prompt", "subject", "target"):
            if not getattr(self, name).value.strip():
                raise ValueError(f"the {name} field is empty; fill it in")
        if self.subject.value.strip() not in self.prompt.value:
            raise ValueError(f"the subject {self.subject.value.strip()!r} does not occur in the prompt; "
                             "the subject must be written in the prompt exactly (locate-then-edit methods edit at its last token)")
        return EditCase(
            prompt=self.prompt.value.strip(), subject=self.subject.value.strip(), target=self.target.value.strip(),
            rephrase=tuple(line.strip() for line in self.rephrase.value.splitlines() if line.strip()),
            locality=tuple(Probe("locality", p, a) for p, a in parse_probes(self.locality.value, "locality")),
            portability=tuple(Probe("portability", p, a) for p, a in parse_probes(self.portability.value, "portability")),
            case_id="playground")

    def _measure(self, case: Any, reference: Any = None) -> tuple[Any, dict[str, str]]:
        from keditlab.evaluate import greedy_generate, measure
        from keditlab.spec.types import EvalSpec

        context = next((h.context for h in reversed(self.handles) if h.context is not None), None)
        settings = EvalSpec(metrics=("reliability", "generalization", "locality", "portability"), max_new_tokens=self.max_new_tokens)
        measured = measure(self.model, self.tokenizer, [case], settings, reference=reference, context=context)[0]
        prompts = list(dict.fromkeys(p.prompt for p in measured.probes))
        framed = [(context(p) if context else "") + p for p in prompts]
        texts = greedy_generate(self.model, self.tokenizer, framed, self.max_new_tokens)
        return measured, dict(zip(prompts, texts))

    def _outcomes(self, before: Any, gens_before: dict[str, str], after: Any, gens_after: dict[str, str]) -> list[ProbeOutcome]:
        kind = {"reliability": "edit prompt", "generalization": "rephrase"}
        old = {(p.metric, p.prompt, p.answer): p.value for p in before.probes}
        return [ProbeOutcome(kind.get(p.metric, p.metric), p.prompt, p.answer, old.get((p.metric, p.prompt, p.answer)),
                             p.value, gens_before.get(p.prompt, ""), gens_after.get(p.prompt, ""))
                for p in after.probes if p.protocol == "teacher_forced"]

    def edit(self) -> EditResult:
        """Measure the probes, apply the edit with the picked method, measure again; the edit stays on the model."""
        import time

        from tqdm.auto import tqdm

        import keditlab

        case, name = self.case(), self.method.value
        started = time.perf_counter()
        with tqdm(total=3, desc=f"{name}: measuring before", leave=False) as bar:
            before, gens_before = self._measure(case)
            bar.update()
            bar.set_description(f"{name}: editing")
            handle = keditlab.apply_edit(name, self.model, self.tokenizer, self.profile, [case], self.settings.get(name, {}),
                                         **({"covariance": self._covariance} if self._covariance else {}))
            self.handles.append(handle)
            bar.update()
            bar.set_description(f"{name}: measuring after")
            after, gens_after = self._measure(case, reference=[before])
            bar.update()
        result = EditResult("edit", name, self._outcomes(before, gens_before, after, gens_after), len(self.handles),
                            time.perf_counter() - started)
        self.history.append(result)
        self._show(result)
        return result

    def undo(self) -> EditResult:
        """Restore the last edit (edits are undone last first) and measure the probes on the model it leaves."""
        if not self.handles:
            raise ValueError("there is no edit to undo")
        handle = self.handles.pop()
        handle.restore()
        last = next(r for r in reversed(self.history) if r.action == "edit" and r.edits_on_model == len(self.handles) + 1)
        case = self.case()
        now, gens_now = self._measure(case)
        old = {(p.kind, p.prompt, p.answer): p for p in last.probes}
        kind = {"reliability": "edit prompt", "generalization": "rephrase"}
        probes = []
        for p in now.probes:
            if p.protocol != "teacher_forced":
                continue
            edited = old.get((kind.get(p.metric, p.metric), p.prompt, p.answer))
            probes.append(ProbeOutcome(kind.get(p.metric, p.metric), p.prompt, p.answer,
                                       edited.after if edited else None, p.value if p.metric != "locality" else 1.0,
                                       edited.generation_after if edited else "", gens_now.get(p.prompt, "")))
        result = EditResult("undo", handle.method, probes, len(self.handles))
        self.history.append(result)
        self._show(result)
        return result

    # -- drawing -----------------------------------------------------------------------------------------------

    def _click(self, action: Any) -> None:
        self.log.clear_output()
        with self.log:
            try:
                action()
            except (ValueError, KeyError, RuntimeError) as exc:
                self.result.value = f"<p class='keditlab' style='color:#cf222e'><b>{type(exc).__name__}</b>: {html.escape(str(exc))}</p>"

    def _show(self, result: EditResult) -> None:
        self.undo_button.disabled = not self.handles
        self.status.value = f"<small>{len(self.handles)} edit{'s' if len(self.handles) != 1 else ''} on the model</small>"
        self.result.value = playground_html(result)


def playground_html(result: EditResult) -> str:
    """One Edit or Undo as a table of probes: value and greedy generation, before and after."""
    if result.action == "edit":
        title = f"<b>{html.escape(result.method)}</b> edit applied in {result.seconds:.1f} s"
        heads = ("before", "after")
    else:
        title = f"<b>{html.escape(result.method)}</b> edit undone: the model is as it was before it"
        heads = ("with the edit", "after undo")
    rows = "".join(
        f"<tr><td>{html.escape(p.kind)}</td><td class='text'>{html.escape(p.prompt)} <b>{html.escape(p.answer)}</b></td>"
        f"<td>{_fmt(p.before)} → {_fmt(p.after)}</td><td>{_mark(p.passed) if result.action == 'edit' else ''}</td>"
        f"<td class='text'>{html.escape(p.generation_before)}</td><td class='text'>{html.escape(p.generation_after)}</td></tr>"
        for p in result.probes)
    return (f"<div class='keditlab'>{STYLE}<p>{title}</p><table><thead><tr><th>probe</th><th>prompt and answer</th>"
            f"<th>{heads[0]} → {heads[1]} (tf)</th><th>pass</th><th>greedy generation {heads[0]}</th><th>{heads[1]}</th></tr>"
            f"</thead><tbody>{rows}</tbody></table></div>")
