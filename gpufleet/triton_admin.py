"""Talk to Triton replicas directly (not through a proxy): load versions, verify them, list what is served.

A load goes to each replica's own repository API and is checked on that replica: a proxy in front
would answer from whichever replica it picked, so "ready" through it proves nothing about the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import tritonclient.http as triton_http
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential
from tritonclient.utils import InferenceServerException

from gpufleet.modelrepo import load_config_json
from gpufleet.spec import ModelSpec

# A replica that is restarting or briefly overloaded refuses connections or times out: worth another
# try. A load Triton answers with an error (bad config, unreadable file) fails the same way each time,
# but a store read can also fail once, so those are retried too, fewer times.
LOAD_ATTEMPTS = 4
LOAD_DEADLINE_S = 120.0


class ReplicaLoadError(RuntimeError):
    """A replica did not end up serving exactly the versions asked for; the message says why."""


@dataclass(frozen=True)
class LoadedVersion:
    model: str
    version: int
    state: str
    reason: str = ""


def client(url: str, timeout_s: float = 60.0) -> triton_http.InferenceServerClient:
    host = url.removeprefix("http://")
    return triton_http.InferenceServerClient(host, connection_timeout=timeout_s, network_timeout=timeout_s)


def repository_index(url: str) -> list[LoadedVersion]:
    """Every model version the replica knows, with its state (READY, UNAVAILABLE, ...)."""
    with client(url, timeout_s=5) as c:
        entries = c.get_model_repository_index()
    out = []
    for e in entries:
        if "version" in e and str(e["version"]).isdigit():
            out.append(LoadedVersion(e["name"], int(e["version"]), e.get("state", ""), e.get("reason", "")))
    return out


def serving_versions(url: str, model: str) -> set[int]:
    return {v.version for v in repository_index(url) if v.model == model and v.state == "READY"}


def load_versions(url: str, model: ModelSpec, versions: list[int]) -> None:
    """Serve exactly `versions` of a CPU-packaged model on one replica (config from the spec alone)."""
    apply_versions(url, model.name, load_config_json(model, versions), versions)


def apply_versions(
    url: str,
    model: str,
    config_json: str,
    versions: Sequence[int],
    *,
    attempts: int = LOAD_ATTEMPTS,
    deadline_s: float = LOAD_DEADLINE_S,
    ready_timeout_s: float = 60.0,
) -> None:
    """Make one replica serve exactly `versions` of `model` (the config pins them), retrying with backoff.

    Verified on that replica: every version asked for is READY, and no other version of the model is.
    Raises ReplicaLoadError with Triton's own reason when it does not get there.
    """
    wanted = set(versions)
    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)) | stop_after_delay(deadline_s),
        wait=wait_exponential(multiplier=0.5, min=0.5, max=8),
        retry=retry_if_exception_type((ReplicaLoadError, OSError, InferenceServerException)),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            _load_once(url, model, config_json, wanted, ready_timeout_s)


def _load_once(url: str, model: str, config_json: str, wanted: set[int], ready_timeout_s: float) -> None:
    with client(url) as c:
        try:
            c.load_model(model, config=config_json)
        except InferenceServerException as exc:
            raise ReplicaLoadError(f"{model} versions {sorted(wanted)}: {exc.message()}") from exc
    # Triton answers the load once it is done, but a version can still be settling: poll briefly.
    deadline = time.monotonic() + ready_timeout_s
    while True:
        index = [v for v in repository_index(url) if v.model == model]
        ready = {v.version for v in index if v.state == "READY"}
        if ready == wanted and _server_ready(url):
            return
        if time.monotonic() > deadline:
            reasons = "; ".join(f"version {v.version} {v.state} {v.reason}".strip() for v in index)
            raise ReplicaLoadError(
                f"{model}: serving {sorted(ready) or 'nothing'} instead of {sorted(wanted)} ({reasons})"
            )
        time.sleep(0.2)


def _server_ready(url: str) -> bool:
    with client(url, timeout_s=5) as c:
        return bool(c.is_server_ready())
