"""Injected faults: a CPU package that fails or slows down on purpose (the demo's regressed version).

`engine build --target cpu --inject-*` writes FAULT_FILE beside model.onnx and records the same
fault in engine.json (`injected_fault`). The python-backend runner (gpufleet/data/triton_onnx_model.py)
reads the file when it is there: per model instance, after its first `after_calls` execute() calls,
each call sleeps `latency_ms` with probability `slow_share` and raises with probability `error_rate`
(seeded, so a replica's sequence of faults is the same on every load). Nothing outside the package
knows of the fault: to a rollout it is a version that happens to be bad.

Raising is what Triton counts as a failed request (nv_inference_request_failure{reason="BACKEND"});
a python-backend InferenceResponse(error=...) would count as a success. A raise fails every request
of that execute() call's dynamic batch.
"""

from __future__ import annotations

import json
import math

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.errors import UserError

FAULT_FILE = "fault.json"  # read by name in gpufleet/data/triton_onnx_model.py
MAX_LATENCY_MS = 60_000.0  # beyond a minute a client times out: that is an outage, not a slow version
DEFAULT_SEED = 0  # fixed: two builds of one fault are the same package


class InjectedFault(BaseModel):
    """What the runner does on purpose; the content of fault.json and of engine.json's injected_fault."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(ge=0, le=1)  # share of execute() calls that raise
    latency_ms: float = Field(ge=0, le=MAX_LATENCY_MS)  # extra sleep of a slow call
    slow_share: float = Field(ge=0, le=1)  # share of execute() calls that sleep latency_ms
    after_calls: int = Field(ge=0)  # each model instance serves this many calls normally first
    seed: int = DEFAULT_SEED  # combined with the instance's name: each instance has its own sequence

    def to_file_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n").encode()

    def describe(self) -> str:
        parts = []
        if self.error_rate:
            parts.append(f"{self.error_rate:.2%} of execute() calls fail")
        if self.latency_ms:
            parts.append(f"+{self.latency_ms:g} ms on {self.slow_share:.2%} of calls")
        after = f" after the first {self.after_calls} calls of each instance" if self.after_calls else ""
        return f"{' and '.join(parts)}{after}"


def fault_from_options(
    *,
    target: str,
    error_rate: str | None,
    latency_ms: str | None,
    slow_share: str | None,
    after: str | None,
) -> InjectedFault | None:
    """The fault the `--inject-*` options ask for (None: none given, or all of them zero).

    Values arrive as the user typed them so that a bad one is one line naming its option, like every
    other refusal, rather than the option parser's usage screen.
    """
    given = {
        name: value
        for name, value in (
            ("--inject-error-rate", error_rate),
            ("--inject-latency-ms", latency_ms),
            ("--inject-slow-share", slow_share),
            ("--inject-after", after),
        )
        if value is not None
    }
    if not given:
        return None
    if target.strip().lower() != "cpu":
        raise UserError(
            f"{next(iter(given))}: only with --target cpu (the CPU package's python runner injects "
            "faults; a TensorRT plan is served as it is)"
        )
    rate = _share("--inject-error-rate", error_rate, default=0.0)
    latency = _number("--inject-latency-ms", latency_ms, default=0.0, high=MAX_LATENCY_MS)
    share = _share("--inject-slow-share", slow_share, default=1.0)
    calls = _count("--inject-after", after)
    if slow_share is not None and latency == 0:
        raise UserError(
            f"--inject-slow-share {slow_share}: it says which calls get the extra latency; "
            "add --inject-latency-ms MS"
        )
    if rate == 0 and (latency == 0 or share == 0):
        if after is not None:
            raise UserError(
                f"--inject-after {after}: there is no fault to start after; "
                "add --inject-error-rate R or --inject-latency-ms MS"
            )
        return None
    return InjectedFault(error_rate=rate, latency_ms=latency, slow_share=share, after_calls=calls)


def _number(option: str, text: str | None, *, default: float, high: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= high:  # also refuses nan
        raise UserError(f"{option} {text!r}: use a number from 0 to {high:g}")
    return value


def _share(option: str, text: str | None, *, default: float) -> float:
    return _number(option, text, default=default, high=1.0)


def _count(option: str, text: str | None) -> int:
    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(f"{option} {text!r}: use a whole number of calls, 0 or more")
    return value
