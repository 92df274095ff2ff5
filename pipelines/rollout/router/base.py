"""The router interface: one per cluster, splitting the requests for a model between two versions.

Clients keep calling the unversioned URL (`/v2/models/<m>/infer`); the router sends each request to
the stable or the canary version, both loaded on the same replicas. Weights map version -> percent
(ints summing to 100, at most two versions, the stable one first). An implementation is anything
that can do a weighted split with a per-target URL rewrite to `/v2/models/<m>/versions/<v>/infer`:
HAProxy's runtime API locally (router/haproxy.py), a Gateway API HTTPRoute with two weighted
backendRefs on Kubernetes.

`weights(model)` reads what the router applies now, never a copy kept by the caller. `{}` means
nothing is set: requests go unversioned, and Triton then serves its default version of the model,
which is the HIGHEST loaded one (with stable and canary both loaded, the canary). A router that
lost its settings (HAProxy restarted) says `{}`.

How the driver reconciles: it persists the weights it means before applying them (write-ahead),
then calls set_weights. On start, and at both ends of every judgment window, it compares
weights(model) with the persisted weights; on a difference (`{}` after a proxy restart, or a
half-applied step) it calls set_weights with the persisted ones again and discards the window the
difference overlapped, since that traffic was not split as the evidence assumes. Because `{}`
sends traffic to the highest loaded version, the driver sets the stable-only weights
(`{stable: 100, canary: 0}`) BEFORE it loads the canary version, and clears them only after the
versions it no longer routes to are unloaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from gpufleet.errors import UserError

Weights = dict[int, int]  # model version -> percent of requests; the stable version first

MAX_VERSIONS = 2


@dataclass(frozen=True)
class Split:
    """A checked weight map in the shape a proxy applies: stable, canary and the canary's share.

    One version only is `stable == canary` with `canary_percent == 0`.
    """

    stable: int
    canary: int
    canary_percent: int

    def as_weights(self) -> Weights:
        if self.stable == self.canary:
            return {self.stable: 100}
        return {self.stable: 100 - self.canary_percent, self.canary: self.canary_percent}


def checked_split(model: str, weights: Mapping[int, int]) -> Split:
    """The split a weight map asks for, or a UserError naming what is wrong with it."""
    where = f"weights for model {model}"
    if not isinstance(weights, Mapping) or not weights:
        raise UserError(f"{where}: give version -> percent, e.g. {{1: 90, 2: 10}}; got {weights!r}")
    if len(weights) > MAX_VERSIONS:
        raise UserError(
            f"{where}: {len(weights)} versions ({', '.join(map(str, weights))}); "
            f"a split has at most {MAX_VERSIONS}, stable and canary"
        )
    for version, percent in weights.items():
        if not _is_int(version) or version < 1:
            raise UserError(f"{where}: version {version!r} is not a positive integer")
        if not _is_int(percent) or not 0 <= percent <= 100:
            raise UserError(f"{where}: version {version} has percent {percent!r}; use an integer 0..100")
    total = sum(weights.values())
    if total != 100:
        raise UserError(f"{where}: percents sum to {total}, not 100 ({dict(weights)})")
    versions = list(weights)
    stable, canary = versions[0], versions[-1]
    return Split(stable, canary, 0 if stable == canary else weights[canary])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Router(ABC):
    """Splits one cluster's requests for a model by version."""

    cluster: str

    @abstractmethod
    def set_weights(self, model: str, weights: Mapping[int, int]) -> None:
        """Apply `weights` (checked with checked_split) to new requests at once, dropping none.

        UserError for a bad map; FleetRuntimeError when the proxy cannot be reached or refuses.
        """

    @abstractmethod
    def weights(self, model: str) -> Weights:
        """What the proxy applies now, read from it; `{}` when nothing is set. FleetRuntimeError
        when the proxy cannot be reached."""

    @abstractmethod
    def clear(self, model: str) -> None:
        """Remove the split: requests go unversioned again (Triton's highest loaded version)."""
