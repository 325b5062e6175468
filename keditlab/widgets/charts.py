"""Matplotlib figures drawn from the frames of :mod:`keditlab.widgets.data`.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: nothing is drawn twice by the notebook's inline backend, no global
figure is left open, and the code works the same in a kernel, a test and a
headless CI job.  :func:`to_png` / :func:`to_svg` turn a figure into bytes for
an ``<img>`` or inline SVG (the static HTML) and for ``ipywidgets.Image``.
"""

from __future__ import annotations

import base64
import io

from keditlab.widgets import require_notebook_extra

require_notebook_extra("keditlab.widgets.charts", ("pandas", "matplotlib"))

import pandas as pd  # noqa: E402 - after the check, so a missing pandas is named with its fix
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keditlab.vocabulary import PROTOCOL_SHORT
from keditlab.widgets.data import METRIC_ORDER, PROTOCOL_ORDER

#: The metrics shown side by side first: the edit itself, then what it should and should not reach.
BAR_METRICS = ("reliability", "generalization", "locality", "portability")


def _panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The (metric, protocol) pairs to draw, reliability, generalization, locality and portability first."""
    pairs = {(m, p) for m, p in zip(frame["metric"], frame["protocol"])}

    def key(pair: tuple[str, str]) -> tuple:
        metric, protocol = pair
        order = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
        proto = PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
        return (proto, order, metric, protocol)

    return sorted(pairs, key=key)


def metric_bars(frame: pd.DataFrame, *, width: float = 2.6, height: float = 2.6) -> Figure:
    """One panel per (metric, protocol), one pair of bars per method: before (light) and after the edit.

    ``frame`` is :func:`~keditlab.widgets.data.metrics_frame`.  Reliability,
    generalization, locality and portability sit side by side in one row, so
    an edit that "works" by breaking unrelated facts shows at a glance.
    """
    panels = _panels(frame)
    methods = list(dict.fromkeys(frame["method"]))
    columns = max(1, min(4, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    colours = [f"C{i % 10}" for i in range(len(methods))]
    for index, (metric, protocol) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        part = frame[(frame["metric"] == metric) & (frame["protocol"] == protocol)].set_index("method")
        xs = range(len(methods))
        pre = [part["pre"].get(m) for m in methods]
        post = [part["post"].get(m) for m in methods]
        ax.bar([x - 0.2 for x in xs], [v if v == v and v is not None else 0 for v in pre], 0.38,
               color=colours, alpha=0.3, label="before")
        ax.bar([x + 0.2 for x in xs], [v if v == v and v is not None else 0 for v in post], 0.38,
               color=colours, label="after")
        ax.set_xticks(list(xs), methods, rotation=30 if len(methods) > 3 else 0, fontsize=8)
        ax.set_title(f"{metric} ({PROTOCOL_SHORT.get(protocol, protocol)})", fontsize=9)
        if metric != "fluency":
            ax.set_ylim(0, 1.05)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    if panels:
        axes[0][0].legend(fontsize=7, loc="lower left")
    figure.suptitle("pale: before the edit · solid: after", fontsize=8)
    return figure


def retention_plot(frame: pd.DataFrame, *, protocol: str = "teacher_forced", width: float = 3.2, height: float = 2.6) -> Figure:
    """One panel per metric: post value against edits applied, one line per method (sequential runs).

    ``frame`` is :func:`~keditlab.widgets.data.retention_frame`.  A falling
    reliability line is forgetting: edits that held when made and were later
    overwritten; a falling locality line is the model drifting away from itself.
    """
    part = frame[frame["protocol"] == protocol] if protocol in set(frame["protocol"]) else frame
    metrics = sorted(set(part["metric"]), key=lambda m: METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER))
    figure = Figure(figsize=(width * max(1, len(metrics)), height), layout="constrained")
    axes = figure.subplots(1, max(1, len(metrics)), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for i, (method, group) in enumerate(part[part["metric"] == metric].groupby("method", sort=False)):
            group = group.sort_values("point")
            ax.plot(group["edits_applied"], group["value"], marker="os^Dv"[i % 5], markersize=4, color=f"C{i % 10}",
                    linestyle=("-", "--", ":", "-.")[i % 4], label=method)  # lines that coincide stay visible
        ax.set_title(f"{metric} ({PROTOCOL_SHORT.get(protocol, protocol)})", fontsize=9)
        ax.set_xlabel("edits applied", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # edits are counted in whole numbers
        if metric != "fluency":
            ax.set_ylim(-0.02, 1.05)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return figure


def to_png(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def to_svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def img_tag(figure: Figure, alt: str, css_class: str = "keditlab-chart") -> str:
    """``<img>`` with the figure as a base64 PNG: survives nbconvert, GitHub's viewer and e-mail."""
    data = base64.b64encode(to_png(figure)).decode("ascii")
    return f"<img class='{css_class}' alt='{alt}' src='data:image/png;base64,{data}' style='max-width:100%'>"
