"""The window journal: every judged window of a rollout, kept in the model store beside its state.

One object per cluster and window, `_rollouts/<model>/windows/<rollout-id>/<cluster>/<index>.json`,
written once (the state file stays small; a window is never rewritten). What it is for:
- a restarted driver replays a cluster's windows through a fresh judge, so the e-values it had
  reached before a crash are not lost (the judge is deterministic in its inputs);
- the report draws weights, per-version error rate and latency, and every verdict from it.
The journal is evidence, not the state: the state file says where the rollout is; a window written
just before a crash whose decision never reached the state is replayed and decided again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from gpufleet.objectstore import ObjectStore
from pipelines.rollout.evidence import NoData, VersionWindow, WindowPair
from pipelines.rollout.state import ROLLOUTS_FOLDER


@dataclass(frozen=True)
class WindowRecord:
    """One judged window on one cluster: what the metrics said, the verdict, and what was done."""

    cluster: str
    index: int  # 0, 1, ... per cluster and rollout, in time order
    start_s: float
    end_s: float
    weight: int  # the canary's router percent during the window
    step_index: int  # the wave's step during the window
    evidence: WindowPair | NoData
    verdict: dict[str, Any]  # Verdict.to_dict(): every number the judge used
    action: dict[str, Any]  # {"kind": ..., "weight": ..., "reason": ...} the policy's answer

    def to_json(self) -> bytes:
        body = asdict(self)
        body["evidence"] = _evidence_dict(self.evidence)
        return json.dumps(body, sort_keys=True, allow_nan=False, default=_jsonable).encode()

    @classmethod
    def from_json(cls, data: bytes) -> WindowRecord:
        raw = json.loads(data)
        raw["evidence"] = _evidence_from(raw["evidence"])
        return cls(**raw)


def _jsonable(value: object) -> object:
    if hasattr(value, "value"):  # enums (Decision, ActionKind)
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _evidence_dict(evidence: WindowPair | NoData) -> dict[str, Any]:
    if isinstance(evidence, NoData):
        return {"no_data": evidence.reason}
    return {"baseline": _window_dict(evidence.baseline), "canary": _window_dict(evidence.canary)}


def _window_dict(window: VersionWindow) -> dict[str, Any]:
    body = asdict(window)
    # JSON keys are strings: keep the quantile levels as text, parsed back in _window_from.
    body["latency_quantiles_ms"] = {str(k): v for k, v in window.latency_quantiles_ms.items()}
    return body


def _evidence_from(raw: dict[str, Any]) -> WindowPair | NoData:
    if "no_data" in raw:
        return NoData(raw["no_data"])
    return WindowPair(baseline=_window_from(raw["baseline"]), canary=_window_from(raw["canary"]))


def _window_from(raw: dict[str, Any]) -> VersionWindow:
    quantiles = {float(k): float(v) for k, v in raw.pop("latency_quantiles_ms").items()}
    return VersionWindow(**raw, latency_quantiles_ms=quantiles)


class WindowJournal:
    """Append and read the judged windows of one rollout."""

    def __init__(self, store: ObjectStore, model: str, rollout_id: str) -> None:
        self.store = store
        self.prefix = f"{ROLLOUTS_FOLDER}/{model}/windows/{rollout_id}/"

    def key(self, cluster: str, index: int) -> str:
        return f"{self.prefix}{cluster}/{index:06d}.json"

    def append(self, record: WindowRecord) -> None:
        data = record.to_json()
        # Written once: a replayed window that is already there (a crash after this write) is kept.
        self.store.create_if_absent(self.key(record.cluster, record.index), data)

    def records(self, cluster: str | None = None) -> list[WindowRecord]:
        """Every stored window (of one cluster, or all), in (cluster, index) order."""
        prefix = self.prefix + (f"{cluster}/" if cluster else "")
        found = []
        for key in sorted(self.store.list_keys(prefix)):
            data = self.store.get_bytes(key)
            if data:
                found.append(WindowRecord.from_json(data))
        return sorted(found, key=lambda r: (r.cluster, r.index))
