"""Talk to Triton replicas directly (not through a proxy): load, verify, list what is served."""

from __future__ import annotations

from dataclasses import dataclass

import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from gpufleet.modelrepo import load_config_json
from gpufleet.spec import ModelSpec


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
    """Load exactly `versions` of the model on one replica and check each answers ready.

    Raises RuntimeError with Triton's own reason when a version does not come up.
    """
    config = load_config_json(model, versions)
    with client(url) as c:
        try:
            c.load_model(model.name, config=config)
        except InferenceServerException as exc:
            raise RuntimeError(f"{model.name} versions {versions}: {exc.message()}") from exc
        for v in versions:
            if not c.is_model_ready(model.name, str(v)):
                raise RuntimeError(f"{model.name} version {v} is not ready after load")
