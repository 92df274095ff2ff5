"""The rollout report from real verdicts: rollouts simulated window by window (seeded traffic, the real
judge and policy), their state written as the driver writes it, and hand-made edge cases (a gate
failure with no windows, NoData windows, windows without quantiles, names that need escaping)."""

from __future__ import annotations

import bisect
import html
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from pipelines.rollout import policy
from pipelines.rollout.evidence import NoData, VersionWindow, WindowPair
from pipelines.rollout.journal import WindowRecord
from pipelines.rollout.judge import CanaryJudge, JudgeSettings
from pipelines.rollout.policy import ActionKind, PolicySettings
from pipelines.rollout.report import ROLLBACK_COLOUR as RED_NAME
from pipelines.rollout.report import _marks, _weight_changes, write_rollout_report
from pipelines.rollout.simulate import ERROR_REGRESSION, HEALTHY, Scenario, TrafficSimulator
from pipelines.rollout.state import ClusterProgress, RolloutState

NOW = 1_800_000_000.0
WINDOW_S = 5.0
# The PNG's pixel size as the report module documents it: 15 in wide, 0.8 in of title and 2.8 in per
# cluster row, at 100 dpi.
WIDTH_PX = 1500


def height_px(clusters: int) -> int:
    return 80 + 280 * clusters


def new_state(waves: list[list[str]], rollout_id: str = "mlp-v2-test") -> RolloutState:
    clusters = {c: ClusterProgress() for wave in waves for c in wave}
    state = RolloutState(
        rollout_id=rollout_id,
        model="mlp",
        stable=1,
        candidate=2,
        steps=[1, 10, 50, 100],
        waves=waves,
        clusters=clusters,
        started_at=NOW,
        updated_at=NOW,
    )
    return state.with_transition("started", NOW, {"stable": 1, "candidate": 2, "waves": waves})


def simulate(
    state: RolloutState,
    scenarios: dict[str, Scenario],
    seed: int = 7,
    evidence_filter: Callable[[int, WindowPair], WindowPair | NoData] | None = None,
    max_windows: int = 2000,
) -> tuple[RolloutState, list[WindowRecord]]:
    """Drive the real judge and policy through the state's waves as the driver does: a gate, a "weight"
    transition per step, one WindowRecord per window, a rollback ending the rollout."""
    settings = PolicySettings(min_bake_seconds=30.0, max_bake_seconds=300.0)
    rng = np.random.default_rng(seed)
    records: list[WindowRecord] = []
    now = NOW + 2.0
    for wave_index, wave in enumerate(state.waves):
        (cluster,) = wave
        state = state.with_transition("gate", now, {"clusters": wave, "passed": True, "reason": "ok"})
        action, step = policy.start(settings, now)
        state = state.with_transition(
            "weight",
            now,
            {"clusters": wave, "weight": action.weight, "reason": action.reason},
            clusters=state.with_cluster(cluster, weight=action.weight, status="canary"),
            phase="canary",
            wave_index=wave_index,
        )
        judge = CanaryJudge(JudgeSettings(), started_s=now)
        simulator = TrafficSimulator(scenarios[cluster], rng)
        index = 0
        while action.kind not in (ActionKind.PROMOTE, ActionKind.ROLLBACK) and index < max_windows:
            weight = step.weight(settings)
            pair = simulator.window(now, now + WINDOW_S, weight)
            evidence = evidence_filter(index, pair) if evidence_filter else pair
            now += WINDOW_S
            verdict = judge.observe(evidence, now)
            action, step = policy.decide(settings, step, verdict, now)
            records.append(
                WindowRecord(
                    cluster=cluster,
                    index=index,
                    start_s=now - WINDOW_S,
                    end_s=now,
                    weight=weight,
                    step_index=state.step_index,
                    evidence=evidence,
                    verdict=verdict.to_dict(),
                    action={"kind": action.kind.value, "weight": action.weight, "reason": action.reason},
                )
            )
            index += 1
            if action.kind is ActionKind.SET_WEIGHT or action.kind is ActionKind.PROMOTE:
                done = action.weight == 100 and wave_index == len(state.waves) - 1
                state = state.with_transition(
                    "weight",
                    now + 0.1,
                    {"clusters": wave, "weight": action.weight, "reason": action.reason},
                    clusters=state.with_cluster(
                        cluster, weight=action.weight, status="promoted" if action.weight == 100 else "canary"
                    ),
                    step_index=state.step_index + 1,
                    **({"phase": "promoted", "reason": action.reason} if done else {}),
                )
        if action.kind is ActionKind.ROLLBACK:
            state = state.with_transition(
                "rollback",
                now + 0.1,
                {"cluster": cluster, "reason": action.reason},
                phase="rolling_back",
                reason=f"{cluster}: {action.reason}",
            )
            touched = [c for c, p in state.clusters.items() if p.status in ("canary", "promoted")]
            restored = {
                c: (p.model_copy(update={"status": "restored", "weight": 0}) if c in touched else p)
                for c, p in state.clusters.items()
            }
            return state.with_transition(
                "rolled_back", now + 1.0, {"restored": touched}, phase="rolled_back", clusters=restored
            ), records
        now += 1.0
    return state, records


def row_of(page: str, cluster: str, index: int) -> str:
    """A verdict row's HTML: from its id to the next verdict row or the end of its table."""
    start = page.index(f'<tr id="{cluster}-{index}">')
    ends = [e for e in (page.find("<tr id=", start + 1), page.find("<h3>", start)) if e != -1]
    return page[start : min(ends, default=len(page))]


def assert_every_verdict_shown(page: str, records: list[WindowRecord]) -> None:
    for record in records:
        row = row_of(page, html.escape(record.cluster), record.index)
        verdict = record.verdict
        assert html.escape(verdict["reason"]) in row, (record.cluster, record.index)
        assert f">{verdict['decision']}<" in row
        assert f"{verdict['canary_requests_total']} / {verdict['canary_errors_total']}" in row
        assert f"{verdict['baseline_requests_total']} / {verdict['baseline_errors_total']}" in row
        for version in ("canary_window", "baseline_window"):
            if verdict[version] is not None:
                numbers = verdict[version]
                assert f"{numbers['requests']} / {numbers['errors']}" in row
        assert len(verdict["tests"]) == 5
        for test in verdict["tests"]:
            assert f"<td>{test['name']}</td>" in row
            assert f"{test['e_value']:.4g} / {test['threshold']:.4g}" in row
            best = "-" if test["best_effect"] is None else f"{test['best_effect']:.4g}"
            assert f"best {best}" in row
        assert html.escape(record.action["reason"]) in row


def assert_png(path: Path, clusters: int) -> None:
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (height_px(clusters), WIDTH_PX)
    assert pixels.std() > 0.05  # drawn, not blank


def coloured_pixels(path: Path, rgb: str, row: int) -> int:
    """Pixels of one colour (matplotlib's tab: palette, hex) in one cluster row of the PNG."""
    pixels = mpimg.imread(path)[80 + 280 * row : 80 + 280 * (row + 1), :, :3]
    wanted = np.array([int(rgb[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(pixels - wanted).max(axis=2) < 0.04).sum())


RED, GREEN = "#d62728", "#2ca02c"  # tab:red, tab:green


def assert_self_contained(page: str, png: Path) -> None:
    import base64

    assert f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower()


@pytest.fixture(scope="module")
def rolled_back() -> tuple[RolloutState, list[WindowRecord]]:
    """Two waves: local-a healthy and promoted, then local-b with an error regression, rolled back."""
    return simulate(new_state([["local-a"], ["local-b"]]), {"local-a": HEALTHY, "local-b": ERROR_REGRESSION})


def test_rolled_back_rollout_shows_every_verdict_and_the_history(
    tmp_path: Path, rolled_back: tuple[RolloutState, list[WindowRecord]]
) -> None:
    state, records = rolled_back
    # What the simulation must have produced for this test to mean anything.
    assert state.phase == "rolled_back"
    assert {r.cluster for r in records} == {"local-a", "local-b"}
    assert records[-1].action["kind"] == "rollback" and records[-1].cluster == "local-b"
    assert any(r.verdict["decision"] == "healthy" for r in records)

    page_path, png = write_rollout_report(tmp_path / "reports", state, records)

    assert page_path == tmp_path / "reports" / "mlp-v2-test.html"
    assert png == tmp_path / "reports" / "mlp-v2-test.png"
    assert_png(png, clusters=2)
    page = page_path.read_text()
    assert_self_contained(page, png)
    assert_every_verdict_shown(page, records)
    assert page.count('<tr id="local-a-') == sum(r.cluster == "local-a" for r in records)
    assert page.count('<tr id="local-b-') == sum(r.cluster == "local-b" for r in records)
    assert "mlp" in page and "1 (stable) -&gt; 2 (candidate)" in page
    assert f"rolled_back: {html.escape(state.reason or '')}" in page
    assert f"{state.updated_at - NOW:.0f} s" in page
    assert "wave 1: local-a (restored, weight 0 %); wave 2: local-b (restored, weight 0 %)" in page
    history = page[page.index("<h2>History</h2>") : page.index("<h2>Verdicts</h2>")]
    for entry in state.history:
        assert f"<td>{entry.event}</td>" in history
        assert f"<td class=n>{entry.at - NOW:.1f}</td>" in history
    assert history.count("<tr>") == len(state.history) + 1
    # Marks: local-b's judged rollback and local-a's restore after it are red, local-a's promotion green.
    assert coloured_pixels(png, RED, row=0) > 30 and coloured_pixels(png, RED, row=1) > 30
    assert coloured_pixels(png, GREEN, row=0) > 30 and coloured_pixels(png, GREEN, row=1) == 0


def test_weight_line_follows_the_windows_and_the_restore(
    rolled_back: tuple[RolloutState, list[WindowRecord]],
) -> None:
    state, records = rolled_back
    every = ["local-a", "local-b"]
    restored_at = next(t.at for t in state.history if t.event == "rolled_back") - NOW
    for cluster in every:
        times, weights = _weight_changes(state, cluster, [r for r in records if r.cluster == cluster], every)
        assert times == sorted(times)

        def weight_at(t: float, times: list[float] = times, weights: list[float] = weights) -> float:
            return weights[bisect.bisect_right(times, t) - 1]

        for record in (r for r in records if r.cluster == cluster):
            assert weight_at(0.5 * (record.start_s + record.end_s) - NOW) == record.weight
        assert weight_at(restored_at + 0.01) == 0.0  # both clusters back on the stable version
    # The journal alone (a state whose history lost its events, e.g. a crash before they were written):
    # the windows still place the weight, and the judged rollback is still marked where it was decided.
    bare = state.model_copy(update={"history": state.history[:1]})
    on_b = [r for r in records if r.cluster == "local-b"]
    times, weights = _weight_changes(bare, "local-b", on_b, every)
    for record in on_b:
        assert weights[bisect.bisect_right(times, 0.5 * (record.start_s + record.end_s) - NOW) - 1] == 1.0
    marks = _marks(bare, "local-b", on_b, every, (times, weights))
    assert [(m.at_s, m.weight, m.colour) for m in marks] == [(on_b[-1].end_s - NOW, 1.0, RED_NAME)]
    first_b = on_b[0]
    times, weights = _weight_changes(state, "local-b", [], every)  # from the history alone
    assert weights[bisect.bisect_right(times, first_b.start_s - NOW - 0.01) - 1] == 0.0
    assert weights[bisect.bisect_right(times, first_b.start_s - NOW + 0.01) - 1] == 1.0


def test_promoted_rollout_on_one_cluster(tmp_path: Path) -> None:
    state, records = simulate(new_state([["local-a"]]), {"local-a": HEALTHY})
    assert state.phase == "promoted" and records[-1].action["kind"] == "promote"

    page_path, png = write_rollout_report(tmp_path, state, records)

    assert_png(png, clusters=1)
    page = page_path.read_text()
    assert_self_contained(page, png)
    assert_every_verdict_shown(page, records)
    assert "wave 1: local-a (promoted, weight 100 %)" in page
    assert coloured_pixels(png, GREEN, row=0) > 30 and coloured_pixels(png, RED, row=0) == 0


def test_gate_failure_with_no_windows(tmp_path: Path) -> None:
    state = new_state([["local-a"], ["local-b"]])
    state = state.with_transition(
        "gate",
        NOW + 3,
        {"clusters": ["local-a"], "passed": False, "reason": "output 0 differs: max |diff| 3.1 > 1e-05"},
        phase="rolling_back",
        reason="gate failed: output 0 differs",
    )
    state = state.with_transition("rolled_back", NOW + 4, {"restored": []}, phase="rolled_back")

    page_path, png = write_rollout_report(tmp_path, state, [])

    assert_png(png, clusters=2)
    page = page_path.read_text()
    assert_self_contained(page, png)
    assert "rolled_back: gate failed: output 0 differs" in page
    assert "max |diff| 3.1 &gt; 1e-05" in page
    assert page.count("No judged windows on this cluster.") == 2


def test_no_data_windows_and_windows_without_quantiles(tmp_path: Path) -> None:
    def degrade(index: int, pair: WindowPair) -> WindowPair | NoData:
        if index % 7 in (3, 4):
            return NoData(f"prometheus at http://127.0.0.1:9/ unreachable <window {index}>")
        if index % 5 == 0:  # a summary with no quantiles yet (Triton's first minute)
            strip = {"latency_quantiles_ms": {}}
            return WindowPair(_with(pair.baseline, **strip), _with(pair.canary, **strip))
        return pair

    state, records = simulate(
        new_state([["local-a"]]), {"local-a": HEALTHY}, evidence_filter=degrade, max_windows=60
    )
    assert any(isinstance(r.evidence, NoData) for r in records)
    assert any(r.verdict["decision"] == "no_data" for r in records)

    page_path, png = write_rollout_report(tmp_path, state, records)

    assert_png(png, clusters=1)
    page = page_path.read_text()
    assert_self_contained(page, png)
    assert_every_verdict_shown(page, records)
    assert "&lt;window 3&gt;" in page and "<window 3>" not in page


def test_text_is_escaped(tmp_path: Path) -> None:
    # A hand-made state may hold any text; the spec's name patterns would refuse this cluster name. In
    # the PNG, "$...$" would be parsed as mathtext and "$\\frac{$" fails to parse.
    cluster = "a<b>$\\frac{$"
    state = new_state([[cluster]], rollout_id="mlp-v2-escape")
    state = state.with_transition(
        "weight",
        NOW + 1,
        {"clusters": [cluster], "weight": 1, "reason": "first <step> & $x$"},
        clusters=state.with_cluster(cluster, weight=1, status="canary"),
    )
    pair = WindowPair(
        VersionWindow(1, NOW + 1, NOW + 6, 500, 1, 20.0, {0.5: 19.0, 0.99: 90.0}),
        VersionWindow(2, NOW + 1, NOW + 6, 5, 0, 21.0, {}),  # no quantiles
    )
    verdict = CanaryJudge(JudgeSettings(), started_s=NOW).observe(pair, NOW + 6).to_dict()
    verdict["reason"] = "canary <script>alert(1)</script> $\\frac{"
    record = WindowRecord(
        cluster, 0, NOW + 1, NOW + 6, 1, 0, pair, verdict, {"kind": "stay", "weight": 1, "reason": "a<b"}
    )

    page_path, png = write_rollout_report(tmp_path, state, [record])

    page = page_path.read_text()
    assert "canary &lt;script&gt;alert(1)&lt;/script&gt; $\\frac{" in page
    assert "<script" not in page.lower()
    assert "first &lt;step&gt; &amp; $x$" in page and "a&lt;b" in page
    assert "<h3>a&lt;b&gt;$\\frac{$: 1 windows</h3>" in page and "<b>" not in page
    assert_every_verdict_shown(page, [record])
    assert_png(png, clusters=1)


def test_a_journal_read_back_from_json_draws_the_same_page(tmp_path: Path) -> None:
    state, records = simulate(new_state([["local-a"]]), {"local-a": ERROR_REGRESSION}, seed=3)
    stored = [WindowRecord.from_json(r.to_json()) for r in records]

    direct, _ = write_rollout_report(tmp_path / "direct", state, records)
    read_back, png = write_rollout_report(tmp_path / "read", state, stored)

    assert_png(png, clusters=1)
    strip = re.compile(r"data:image/png;base64,[^\"]+")
    assert strip.sub("", direct.read_text()) == strip.sub("", read_back.read_text())


def judged_windows(
    cluster: str, scenario: Scenario, count: int, weight: int, seed: int
) -> list[WindowRecord]:
    """`count` windows at a fixed weight through the real judge, every third one without data."""
    simulator = TrafficSimulator(scenario, np.random.default_rng(seed))
    judge = CanaryJudge(JudgeSettings(), started_s=NOW)
    records = []
    for index in range(count):
        start = NOW + WINDOW_S * index
        evidence: WindowPair | NoData = simulator.window(start, start + WINDOW_S, weight)
        if index % 3 == 2:
            evidence = NoData("prometheus unreachable")
        verdict = judge.observe(evidence, start + WINDOW_S)
        action = {"kind": "stay", "weight": weight, "reason": verdict.reason}
        records.append(
            WindowRecord(
                cluster, index, start, start + WINDOW_S, weight, 1, evidence, verdict.to_dict(), action
            )
        )
    return records


def test_five_hundred_windows_render_quickly(tmp_path: Path) -> None:
    state = new_state([["local-a"], ["local-b"]])
    records = judged_windows("local-a", HEALTHY, 250, 10, seed=1)
    records += judged_windows("local-b", HEALTHY, 250, 10, seed=2)

    # CPU time of this process: the machine is shared, so wall time would measure the neighbours.
    began = time.process_time()
    page_path, png = write_rollout_report(tmp_path, state, records)
    elapsed = time.process_time() - began

    assert_png(png, clusters=2)
    assert_every_verdict_shown(page_path.read_text(), records[::50])
    assert elapsed < 2.0, f"{elapsed:.2f} s of CPU for {len(records)} windows"  # ~0.9 s measured


def _with(obj, **changes):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(obj, **changes)
