"""docs/models.md's architecture matrix: which method runs on which family, generated and checked.

Each cell is what ``tests/unit/test_architecture_matrix.py`` enforces on a tiny
random model of the family (:mod:`keditlab.devtools.architectures`): ✓ (the
edit runs, changes only the parameters it declares, raises the target's
probability, and ``restore()`` gives every tensor back bit for bit), or the
reason the spec is refused at validation (:mod:`keditlab.spec.model_needs`,
from the family's config and the method's declared ``model_needs``).  The
table sits between :data:`START` and :data:`END`; the rest of the page is
hand-written.  ``python -m keditlab.devtools.generate --write`` rewrites it.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DOC = REPO_ROOT / "docs" / "models.md"
START = "<!-- architecture-matrix:start -->"
END = "<!-- architecture-matrix:end -->"

#: What ✓ says, once, under the table.
TICK = ("✓: the edit runs, only the parameters the method declares change (GRACE, WISE and T-Patcher add their memory beside "
        "one module, IKE a context before the prompt), the target's probability given the prompt rises, and "
        "`restore()` gives back every parameter and buffer bit for bit")


#: Pairs that run and restore exactly but miss one check on the tiny model, with what is missed.  The matrix test
#: expects each to fail (strictly: a gap that closes must be taken off this list).  Open work, not a design.
GAPS: dict[tuple[str, str], str] = {
    (method, family): "runs and restores exactly, but on the tiny random model the new answer does not gain on the old"
    for method, family in [("kn", "qwen3"), ("kn", "gemma2"), ("kn", "gemma3_text"), ("kn", "phi3")]
}


def expected_cell(method: str, family: str) -> str | None:
    """Why ``method`` is refused on ``family`` at validation, or None when it runs (and the matrix test checks it does)."""
    from keditlab.devtools.architectures import tiny_config_dict
    from keditlab.methods import get_method
    from keditlab.spec.model_needs import refusal

    return refusal(method, get_method(method).model_needs, tiny_config_dict(family))


def _cell(method: str, family: str) -> tuple[str, str | None]:
    """The cell's text and, for a refusal, its footnote (shared by every cell refused for the same reason)."""
    from keditlab.devtools.architectures import tiny_config_dict
    from keditlab.methods import get_method
    from keditlab.spec.model_needs import first_unmet

    found = first_unmet(get_method(method).model_needs, tiny_config_dict(family))
    if found is None and (method, family) in GAPS:
        return "✗", GAPS[method, family]
    if found is None:
        return "✓", None
    need, _reason, own = found
    whose = "the method needs" if own else "keditlab's model profile, which every method needs, needs"
    return f"refused: {need.kind}", f"{need.kind}: {whose} {need.says}"


def matrix_table() -> str:
    """The table: one row per method, one column per family (dense first, then mixture-of-experts)."""
    from keditlab.devtools.architectures import DENSE_FAMILIES, FAMILIES, MOE_FAMILIES
    from keditlab.methods import method_names

    families = [*DENSE_FAMILIES, *MOE_FAMILIES]
    notes: dict[str, int] = {}
    rows = ["| method | " + " | ".join(f"`{f}`" for f in families) + " |", "|---" * (len(families) + 1) + "|"]
    for method in method_names():
        cells = []
        for family in families:
            text, note = _cell(method, family)
            if note is not None:
                text += f" ({notes.setdefault(note, len(notes) + 1)})"
            cells.append(text)
        rows.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines = ["\n".join(rows), "", TICK + "."]
    for note, number in notes.items():
        if note in GAPS.values():
            lines += ["", f"({number}) Open: {note}."]
            continue
        lines += ["", f"({number}) Refused when the spec is validated, before any weight loads; {note}. "
                  "`keditlab validate` names the config key that shows it and the methods that can edit the model instead."]
    lines += ["", "The families, as the tiny models keep them:", ""]
    for family, (special, _settings) in FAMILIES.items():
        lines.append(f"* `{family}`: {special}")
    return "\n".join(lines)


def models_doc_with_matrix(text: str) -> str:
    """``text`` (docs/models.md) with the part between :data:`START` and :data:`END` replaced by :func:`matrix_table`."""
    if START not in text or END not in text:
        raise ValueError(f"docs/models.md lacks the markers {START!r} … {END!r}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{matrix_table()}\n{END}{tail}"
