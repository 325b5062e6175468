"""What a causal trace returns: plain data, JSON-ready, shown as a heatmap in a notebook.

A :class:`TraceResult` is one fact, one kind of state (``residual``, ``mlp``,
``attn``): for every traced token and layer the probability of the answer when
that state (or, for ``mlp``/``attn``, a window of layers around it) is restored
to its clean value in the corrupted run.  The *indirect effect* of a state is
that probability minus the corrupted run's (Meng et al., 2022, §2.1).

An :class:`AverageTrace` is many facts averaged: the mean indirect effect per
layer at the subject's last token and at the prompt's last token, per kind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from keditlab.vocabulary import TRACE_KINDS

#: The states a trace can restore: the residual stream (a block's output), the MLP output, the attention output.
KINDS = TRACE_KINDS

#: The token positions an averaged trace reports.
AVERAGE_POSITIONS = ("subject_last", "last")


@dataclass
class TraceResult:
    """One fact traced for one kind of state.

    ``scores[i, l]`` is P(answer token) with the state of token
    ``positions[i]`` at layer ``l`` restored (for ``mlp`` and ``attn``: the
    outputs at layers ``window_layers(l)``), averaged over ``samples`` noise
    draws.  ``clean_prob`` and ``corrupted_prob`` are the two baselines, so
    ``indirect_effect = scores - corrupted_prob`` and restoring everything
    gives back ``clean_prob``.  ``noise`` is the standard deviation of the
    Gaussian noise added to the subject's token embeddings and
    ``noise_basis`` says where it came from.  ``warnings`` are conditions
    under which the effects mean little (the model does not predict the answer
    in the clean run, the noise does not lower it).
    """

    prompt: str
    subject: str
    answer: str
    answer_token_id: int
    kind: str
    tokens: list[str]
    subject_range: tuple[int, int]  # token indices [start, end) of the subject
    positions: list[int]  # the token indices traced: the rows of ``scores``
    scores: np.ndarray  # (len(positions), num_layers)
    clean_prob: float
    corrupted_prob: float
    predicted: str  # the clean run's top next token
    predicted_prob: float
    samples: int
    noise: float
    noise_basis: str
    window: int | None  # None for residual: one layer at a time
    seed: int
    model: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return int(self.scores.shape[1])

    @property
    def indirect_effect(self) -> np.ndarray:
        """``scores - corrupted_prob``: how much of the answer's probability each restored state brings back."""
        return self.scores - self.corrupted_prob

    @property
    def subject_last(self) -> int:
        """Token index of the subject's last token (where ROME edits)."""
        return self.subject_range[1] - 1

    @property
    def last(self) -> int:
        """Token index of the prompt's last token (where the answer is predicted)."""
        return len(self.tokens) - 1

    def effect_at(self, token: int) -> np.ndarray:
        """Indirect effect per layer at token index ``token`` (which must have been traced)."""
        if token not in self.positions:
            raise ValueError(f"token {token} was not traced; traced tokens: {self.positions}")
        return self.indirect_effect[self.positions.index(token)]

    def window_layers(self, layer: int) -> list[int]:
        """The layers restored together for the column ``layer`` (ROME's window, centred on ``layer``)."""
        return window_layers(layer, self.num_layers, self.window)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scores"] = np.asarray(self.scores).round(6).tolist()
        data["subject_range"] = list(self.subject_range)
        data["indirect_effect"] = np.asarray(self.indirect_effect).round(6).tolist()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TraceResult":
        data = {k: v for k, v in data.items() if k != "indirect_effect"}
        data["scores"] = np.asarray(data["scores"], dtype=float)
        data["subject_range"] = tuple(data["subject_range"])
        return cls(**data)

    def plot(self, ax=None, **kwargs):
        """The heatmap of this trace (see :func:`keditlab.trace.plot.plot_trace`)."""
        from keditlab.trace.plot import plot_trace

        return plot_trace(self, ax=ax, **kwargs)

    def _repr_png_(self) -> bytes:
        from keditlab.trace.plot import figure_png

        return figure_png(self.plot().figure)

    def __repr__(self) -> str:
        peak = np.unravel_index(int(np.argmax(self.indirect_effect)), self.scores.shape)
        return (f"TraceResult({self.kind}, {self.prompt!r} -> {self.answer!r}: clean {self.clean_prob:.3f}, "
                f"corrupted {self.corrupted_prob:.3f}, largest effect {self.indirect_effect[peak]:.3f} at token "
                f"{self.positions[peak[0]]} {self.tokens[self.positions[peak[0]]]!r}, layer {peak[1]}"
                + (f"; {len(self.warnings)} warning(s)" if self.warnings else "") + ")")


def window_layers(layer: int, num_layers: int, window: int | None) -> list[int]:
    """Layers restored together for a column: ``[layer]`` without a window, else ``window`` layers around it.

    As in ROME's code: ``max(0, layer - window // 2)`` up to, not including,
    ``min(num_layers, layer - (-window // 2))``, so the window is clipped at the
    first and last layers.
    """
    if not window:
        return [layer]
    return list(range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2))))


@dataclass
class AverageTrace:
    """Indirect effects averaged over many facts, per kind and layer, at two token positions.

    ``effects[kind][position]`` is the mean indirect effect per layer (a list of
    ``num_layers`` floats) with ``position`` one of ``subject_last`` (the
    subject's last token) and ``last`` (the prompt's last token);
    ``sem[kind][position]`` its standard error over facts.  ``facts`` lists
    each fact traced (prompt, subject, answer, baselines); ``skipped`` the
    facts left out and why (the model did not predict them, in ``known_only``
    mode).
    """

    model: str
    num_layers: int
    kinds: list[str]
    effects: dict[str, dict[str, list[float]]]
    sem: dict[str, dict[str, list[float]]]
    facts: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    samples: int
    noise: float
    noise_basis: str
    window: int
    seed: int
    seconds: float = 0.0
    source: str = ""

    def peak_layer(self, kind: str = "mlp", position: str = "subject_last") -> int:
        """The layer with the largest mean indirect effect of ``kind`` at ``position``."""
        return int(np.argmax(self.effects[kind][position]))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["peaks"] = {kind: {pos: self.peak_layer(kind, pos) for pos in self.effects[kind]} for kind in self.kinds}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AverageTrace":
        return cls(**{k: v for k, v in data.items() if k != "peaks"})

    def plot(self, **kwargs):
        """Mean indirect effect per layer, one panel per position (see :func:`keditlab.trace.plot.plot_average`)."""
        from keditlab.trace.plot import plot_average

        return plot_average(self, **kwargs)

    def _repr_png_(self) -> bytes:
        from keditlab.trace.plot import figure_png

        return figure_png(self.plot())

    def __repr__(self) -> str:
        peaks = ", ".join(f"{k} peaks at layer {self.peak_layer(k)}" for k in self.kinds)
        return f"AverageTrace({self.model}, {len(self.facts)} facts ({len(self.skipped)} skipped); at the subject's last token: {peaks})"
