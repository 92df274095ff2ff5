"""The rollout report: `<rollout-id>.html` (self-contained) and `<rollout-id>.png` from a rollout's state
and its window journal.

The PNG has one row per cluster (in wave order) and three panels per row, on one time axis (seconds
since the rollout started): the canary's router weight (a step plot from the journal's windows and the
state's "weight" transitions; rollbacks and promotions marked red and green), the error rate of each
version per window, and each version's mean and p99 latency per window. Windows without data are
shaded grey. The HTML holds the header (model, versions, outcome, duration, waves), the PNG as a
data: URL, the state's history, and every verdict with the numbers the judge used.

Drawn with matplotlib's Agg canvas directly (no pyplot): no global backend is switched and no figure
is left open, so a driver or a notebook importing this keeps its own backend.
"""

from __future__ import annotations

import base64
import bisect
import html
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipelines.rollout.evidence import NoData, VersionWindow
from pipelines.rollout.journal import WindowRecord
from pipelines.rollout.state import RolloutState, Transition

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# PNG size: FIGURE_WIDTH_IN x (TITLE_HEIGHT_IN + ROW_HEIGHT_IN per cluster) inches at DPI.
FIGURE_WIDTH_IN = 15.0
ROW_HEIGHT_IN = 2.8
TITLE_HEIGHT_IN = 0.8
DPI = 100
# Margins (inches): the suptitle and the first row's titles fit in TITLE_HEIGHT_IN, the x label in
# _BOTTOM_IN, each further row's titles in _ROW_GAP_IN, the y tick labels in the column gaps.
_LEFT_IN, _RIGHT_IN, _BOTTOM_IN = 0.6, 0.25, 0.55
_ROW_GAP_IN, _COLUMN_GAP_IN = 0.6, 0.7
P99 = 0.99
STABLE_COLOUR = "tab:blue"
CANARY_COLOUR = "tab:orange"
ROLLBACK_COLOUR = "tab:red"
PROMOTE_COLOUR = "tab:green"
NO_DATA_COLOUR = "0.85"
# History events that return the clusters they name (detail "restored", or "cluster") to weight 0.
RESTORING_EVENTS = frozenset({"rolled_back", "aborted", "restored"})
FloatArray = npt.NDArray[np.float64]


def write_rollout_report(
    out_dir: Path, state: RolloutState, records: Sequence[WindowRecord]
) -> tuple[Path, Path]:
    """Write `<out_dir>/<rollout_id>.html` and `.png`; returns (html path, png path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{state.rollout_id}.html"
    png = out_dir / f"{state.rollout_id}.png"
    clusters = _clusters(state, records)
    by_cluster = {
        name: sorted((r for r in records if r.cluster == name), key=lambda r: r.index) for name in clusters
    }
    _draw(png, state, by_cluster)
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    page.write_text(_page(state, by_cluster, image), encoding="utf-8")
    return page, png


# --- what is drawn ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mark:
    at_s: float  # since the rollout started
    weight: float  # where on the weight panel: the weight the decision was taken at (or moved to)
    colour: str


def _clusters(state: RolloutState, records: Iterable[WindowRecord]) -> list[str]:
    """Clusters in wave order, then any other the state or the journal names."""
    names = [c for wave in state.waves for c in wave]
    for name in [*state.clusters, *(r.cluster for r in records)]:
        if name not in names:
            names.append(name)
    return names


def _named_clusters(detail: Mapping[str, Any], every: Sequence[str]) -> list[str]:
    """The clusters a transition is about: detail "cluster", "clusters" or "restored"; all of them when
    it names none (a rollout-wide event)."""
    single = detail.get("cluster")
    if isinstance(single, str):
        return [single]
    for key in ("clusters", "restored"):
        many = detail.get(key)
        if isinstance(many, list):
            return [str(c) for c in many]
    return list(every)


def _weight_changes(
    state: RolloutState, cluster: str, records: Sequence[WindowRecord], every: Sequence[str]
) -> tuple[list[float], list[float]]:
    """(times, weights) of the canary's weight on the cluster, each holding until the next time."""
    changes: list[tuple[float, float]] = [(0.0, 0.0)]
    changes += [(r.start_s - state.started_at, float(r.weight)) for r in records]
    for entry in state.history:
        if cluster not in _named_clusters(entry.detail, every):
            continue
        at = entry.at - state.started_at
        if entry.event == "weight" and isinstance(entry.detail.get("weight"), int | float):
            changes.append((at, float(entry.detail["weight"])))
        elif entry.event in RESTORING_EVENTS:
            changes.append((at, 0.0))
    changes.sort(key=lambda change: change[0])  # stable: at equal times the later-listed one wins
    end = max([state.updated_at - state.started_at, *(r.end_s - state.started_at for r in records)])
    changes.append((end, changes[-1][1]))
    return [t for t, _ in changes], [w for _, w in changes]


def _marks(
    state: RolloutState,
    cluster: str,
    records: Sequence[WindowRecord],
    every: Sequence[str],
    weights: tuple[list[float], list[float]],
) -> list[_Mark]:
    """Rollbacks (red) and promotions (green) on the cluster."""
    marks = []
    for record in records:
        kind = str(record.action.get("kind", ""))
        at = float(record.verdict.get("at_s") or record.end_s) - state.started_at
        if kind == "rollback":
            marks.append(_Mark(at, float(record.weight), ROLLBACK_COLOUR))
        elif kind == "promote":
            marks.append(_Mark(at, 100.0, PROMOTE_COLOUR))
    # The state's own events mark what no window on this cluster decided: a gate failure, an abort, a
    # restore after another cluster failed (a judged rollback is followed by a "rollback" event and a
    # restore seconds later: marked once).
    judged = {m.colour for m in marks}
    for entry in state.history:
        if cluster not in _named_clusters(entry.detail, every):
            continue
        at = entry.at - state.started_at
        failed_gate = entry.event == "gate" and entry.detail.get("passed") is False
        if (entry.event == "rollback" or entry.event in RESTORING_EVENTS or failed_gate) and (
            ROLLBACK_COLOUR not in judged
        ):
            marks.append(_Mark(at, _weight_before(weights, at), ROLLBACK_COLOUR))
            judged.add(ROLLBACK_COLOUR)
        elif entry.event == "promoted" and PROMOTE_COLOUR not in judged:
            marks.append(_Mark(at, _weight_before(weights, at), PROMOTE_COLOUR))
            judged.add(PROMOTE_COLOUR)
    return marks


def _weight_before(weights: tuple[list[float], list[float]], at_s: float) -> float:
    times, values = weights
    index = bisect.bisect_left(times, at_s) - 1
    return values[max(index, 0)]


def _window_series(state: RolloutState, records: Sequence[WindowRecord]) -> dict[str, FloatArray]:
    """Per window (NaN where a window has no such number): mid time, and per version the error rate
    (percent), mean and p99 latency."""
    columns: dict[str, list[float]] = {
        key: []
        for key in (
            "t",
            "stable_error",
            "canary_error",
            "stable_mean",
            "canary_mean",
            "stable_p99",
            "canary_p99",
        )
    }
    for record in records:
        columns["t"].append(0.5 * (record.start_s + record.end_s) - state.started_at)
        evidence = record.evidence
        for role in ("stable", "canary"):
            window = None
            if not isinstance(evidence, NoData):
                window = evidence.baseline if role == "stable" else evidence.canary
            columns[f"{role}_error"].append(_percent(window.error_rate) if window else math.nan)
            columns[f"{role}_mean"].append(_or_nan(window.latency_mean_ms) if window else math.nan)
            columns[f"{role}_p99"].append(_p99(window) if window else math.nan)
    return {key: np.array(values, dtype=float) for key, values in columns.items()}


def _no_data_spans(state: RolloutState, records: Sequence[WindowRecord]) -> list[tuple[float, float]]:
    """Time spans of windows without data, adjacent ones merged (one patch each, not one per window)."""
    spans: list[tuple[float, float]] = []
    for record in records:
        if not isinstance(record.evidence, NoData):
            continue
        start, end = record.start_s - state.started_at, record.end_s - state.started_at
        if spans and start <= spans[-1][1] + 1e-9:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


def _percent(rate: float | None) -> float:
    return math.nan if rate is None else 100.0 * rate


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _p99(window: VersionWindow) -> float:
    if window.requests <= 0:
        return math.nan
    return _or_nan(window.latency_quantiles_ms.get(P99))


def _plain(text: str) -> str:
    # matplotlib reads text between two '$' as mathtext (and fails on bad syntax): show it literally.
    return text.replace("$", r"\$")


def _draw(png: Path, state: RolloutState, by_cluster: Mapping[str, Sequence[WindowRecord]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    rows = max(1, len(by_cluster))
    height = TITLE_HEIGHT_IN + ROW_HEIGHT_IN * rows
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI)
    FigureCanvasAgg(figure)
    # Fixed margins in inches instead of a layout engine: the constrained one took most of the time.
    axes_height = (height - TITLE_HEIGHT_IN - _BOTTOM_IN - _ROW_GAP_IN * (rows - 1)) / rows
    axes_width = (FIGURE_WIDTH_IN - _LEFT_IN - _RIGHT_IN - 2 * _COLUMN_GAP_IN) / 3
    axes = figure.subplots(
        rows,
        3,
        squeeze=False,
        sharex=True,
        gridspec_kw={
            "left": _LEFT_IN / FIGURE_WIDTH_IN,
            "right": 1 - _RIGHT_IN / FIGURE_WIDTH_IN,
            "top": 1 - TITLE_HEIGHT_IN / height,
            "bottom": _BOTTOM_IN / height,
            "hspace": _ROW_GAP_IN / axes_height,
            "wspace": _COLUMN_GAP_IN / axes_width,
        },
    )
    figure.suptitle(
        _plain(f"{state.model}: v{state.stable} -> v{state.candidate}, {state.phase}  ({state.rollout_id})")
    )
    every = list(by_cluster)
    waves = {c: i + 1 for i, wave in enumerate(state.waves) for c in wave}
    for row, (cluster, records) in enumerate(by_cluster.items()):
        weight_axis, error_axis, latency_axis = axes[row]
        progress = state.clusters.get(cluster)
        where = f"wave {waves[cluster]}" if cluster in waves else "no wave"
        status = f", {progress.status}" if progress else ""
        weight_axis.set_title(_plain(f"{cluster} ({where}{status}): canary weight %"), fontsize=10)
        error_axis.set_title("error rate % per window", fontsize=10)
        latency_axis.set_title("latency ms per window (mean, p99)", fontsize=10)
        times, weights = _weight_changes(state, cluster, records, every)
        weight_axis.step(times, weights, where="post", color=CANARY_COLOUR, label="canary weight")
        # Steps are 1, 10, 50, 100: linear below 1 %, logarithmic above, so 1 % is not drawn as 0.
        weight_axis.set_yscale("symlog", linthresh=1.0, linscale=0.5)
        weight_axis.set_ylim(0, 130)
        weight_axis.set_yticks(sorted({0, *state.steps}))
        weight_axis.set_yticklabels([f"{w:g}" for w in sorted({0, *state.steps})])
        weight_axis.minorticks_off()
        marks = _marks(state, cluster, records, every, (times, weights))
        for colour, label, marker in ((ROLLBACK_COLOUR, "rollback", "v"), (PROMOTE_COLOUR, "promote", "^")):
            chosen = [m for m in marks if m.colour == colour]
            if not chosen:
                continue
            for axis in axes[row]:
                axis.vlines(
                    [m.at_s for m in chosen],
                    0,
                    1,
                    transform=axis.get_xaxis_transform(),
                    colors=colour,
                    linestyles="--",
                    linewidth=1.2,
                )
            weight_axis.scatter(
                [m.at_s for m in chosen],
                [m.weight for m in chosen],
                color=colour,
                zorder=3,
                marker=marker,
                label=label,
            )
        series = _window_series(state, records)
        for role, colour, version in (
            ("stable", STABLE_COLOUR, state.stable),
            ("canary", CANARY_COLOUR, state.candidate),
        ):
            error_axis.plot(
                series["t"],
                series[f"{role}_error"],
                color=colour,
                marker=".",
                markersize=3,
                linewidth=0.8,
                label=f"{role} v{version}",
            )
            latency_axis.plot(
                series["t"],
                series[f"{role}_mean"],
                color=colour,
                linewidth=1.0,
                label=f"{role} v{version} mean",
            )
            latency_axis.plot(
                series["t"],
                series[f"{role}_p99"],
                color=colour,
                linewidth=1.0,
                linestyle="--",
                label=f"{role} v{version} p99",
            )
        spans = _no_data_spans(state, records)
        if spans:
            for axis in (error_axis, latency_axis):
                # One collection per panel, full height (axes y): axvspan is one patch each, slow.
                shaded = PolyCollection(
                    [[(a, 0.0), (b, 0.0), (b, 1.0), (a, 1.0)] for a, b in spans],
                    facecolors=NO_DATA_COLOUR,
                    linewidths=0,
                    zorder=0,
                    transform=axis.get_xaxis_transform(),
                )
                axis.add_collection(shaded, autolim=False)
        if not records:
            for axis in (error_axis, latency_axis):
                axis.text(
                    0.5,
                    0.5,
                    "no judged windows",
                    transform=axis.transAxes,
                    ha="center",
                    va="center",
                    color="0.4",
                )
        error_axis.set_ylim(bottom=0)
        latency_axis.set_ylim(bottom=0)
        for axis in axes[row]:
            axis.grid(True, alpha=0.3)
        if row == 0:
            for axis in axes[row]:
                _legend(axis)
    for axis in axes[-1]:
        axis.set_xlabel("seconds since the rollout started")
    figure.savefig(png, dpi=DPI, format="png")


def _legend(axis: Axes) -> None:
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        # A fixed place: "best" searches every data point for room, slow with hundreds of windows.
        axis.legend(loc="upper left", fontsize=7, framealpha=0.8)


# --- the page ------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse;margin-bottom:1em}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;font-size:13px}"
    "td.n{text-align:right}table.tests td{border:none;padding:0 6px;font-size:12px}"
    ".rollback{color:#b00}.promote{color:#070}.no_data{color:#777}img{max-width:100%}"
)


def _page(state: RolloutState, by_cluster: Mapping[str, Sequence[WindowRecord]], image: str) -> str:
    e = html.escape
    verdicts = "".join(_verdict_table(state, cluster, records) for cluster, records in by_cluster.items())
    return (
        "<!doctype html><meta charset=utf-8>"
        f"<title>gpufleet rollout {e(state.rollout_id)}</title><style>{_STYLE}</style>"
        f"<h1>Rollout {e(state.rollout_id)}</h1>{_header(state, by_cluster)}"
        f'<p><img alt="canary weight, error rate and latency per cluster" '
        f'src="data:image/png;base64,{image}"></p>'
        f"<h2>History</h2>{_history_table(state)}"
        f"<h2>Verdicts</h2>{verdicts}"
    )


def _header(state: RolloutState, by_cluster: Mapping[str, Sequence[WindowRecord]]) -> str:
    e = html.escape
    outcome = state.phase + (f": {state.reason}" if state.reason else "")
    waves = "; ".join(
        f"wave {i + 1}: "
        + ", ".join(
            f"{c} ({state.clusters[c].status}, weight {state.clusters[c].weight} %)"
            if c in state.clusters
            else c
            for c in wave
        )
        for i, wave in enumerate(state.waves)
    )
    windows = sum(len(r) for r in by_cluster.values())
    facts = [
        ("model", state.model),
        ("versions", f"{state.stable} (stable) -> {state.candidate} (candidate)"),
        ("outcome", outcome),
        ("started", _utc(state.started_at)),
        ("duration", f"{state.updated_at - state.started_at:.0f} s (last update {_utc(state.updated_at)})"),
        ("steps", ", ".join(f"{s} %" for s in state.steps)),
        ("waves", waves),
        ("judged windows", str(windows)),
    ]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    return f"<table class=facts>{rows}</table>"


def _history_table(state: RolloutState) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td class=n>{t.seq}</td><td class=n>{t.at - state.started_at:.1f}</td>"
        f"<td>{e(_utc(t.at))}</td><td>{e(t.event)}</td><td>{e(_detail(t))}</td></tr>"
        for t in state.history
    )
    return (
        "<table class=history><tr><th>seq</th><th>t (s)</th><th>time (UTC)</th><th>event</th>"
        f"<th>detail</th></tr>{rows}</table>"
    )


def _detail(entry: Transition) -> str:
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)}"
        for k, v in entry.detail.items()
    )


def _verdict_table(state: RolloutState, cluster: str, records: Sequence[WindowRecord]) -> str:
    e = html.escape
    heading = f"<h3>{e(cluster)}: {len(records)} windows</h3>"
    if not records:
        return heading + "<p>No judged windows on this cluster.</p>"
    head = (
        "<tr><th>#</th><th>window (s)</th><th>weight %</th><th>decision</th><th>reason</th>"
        "<th>canary window req / err</th><th>baseline window req / err</th>"
        "<th>canary total req / err</th><th>baseline total req / err</th>"
        "<th>tests: e-value / threshold, best effect, events</th><th>action</th></tr>"
    )
    rows = "".join(_verdict_row(state, cluster, record) for record in records)
    return f"{heading}<table class=verdicts>{head}{rows}</table>"


def _verdict_row(state: RolloutState, cluster: str, record: WindowRecord) -> str:
    e = html.escape
    verdict = record.verdict
    decision = str(verdict.get("decision", ""))
    canary, baseline = verdict.get("canary_window"), verdict.get("baseline_window")
    action = record.action
    action_text = f"{action.get('kind', '')} -> {action.get('weight', '')} %: {action.get('reason', '')}"
    window = f"{record.start_s - state.started_at:.1f} - {record.end_s - state.started_at:.1f}"
    return (
        f'<tr id="{e(cluster)}-{record.index}"><td class=n>{record.index}</td><td class=n>{window}</td>'
        f"<td class=n>{record.weight}</td><td class={e(decision)}>{e(decision)}</td>"
        f"<td>{e(str(verdict.get('reason', '')))}</td>"
        f"<td class=n>{_counts(canary)}</td><td class=n>{_counts(baseline)}</td>"
        f"<td class=n>{_number(verdict.get('canary_requests_total'))} / "
        f"{_number(verdict.get('canary_errors_total'))}</td>"
        f"<td class=n>{_number(verdict.get('baseline_requests_total'))} / "
        f"{_number(verdict.get('baseline_errors_total'))}</td>"
        f"<td>{_tests_table(verdict.get('tests') or [])}</td><td>{e(action_text)}</td></tr>"
    )


def _counts(window: object) -> str:
    if not isinstance(window, Mapping):
        return "-"
    return f"{_number(window.get('requests'))} / {_number(window.get('errors'))}"


def _tests_table(tests: Sequence[Mapping[str, Any]]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(t.get('name', '')))}</td>"
        f"<td class=n>{_number(t.get('e_value'))} / {_number(t.get('threshold'))}</td>"
        f"<td class=n>best {_number(t.get('best_effect'))}</td>"
        f"<td class=n>{_events(t)}</td></tr>"
        for t in tests
    )
    return f"<table class=tests>{rows}</table>" if rows else "-"


def _events(test: Mapping[str, Any]) -> str:
    canary = f"{_number(test.get('canary_events'))}/{_number(test.get('canary_requests'))}"
    if test.get("baseline_requests") is None:
        return canary
    return f"{canary} vs {_number(test.get('baseline_events'))}/{_number(test.get('baseline_requests'))}"


def _number(value: object) -> str:
    """Numbers as the page shows them: integers in full, others to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))
