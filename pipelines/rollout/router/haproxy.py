"""The local router: HAProxy's routes map, changed over its admin socket (no reload).

The proxy's config (gpufleet/local/haproxy.py) looks each unversioned infer's model up in a map
whose entries are `<model> <stable>/<canary>/<canary percent>` and sends the request to its
stable or canary backend, which rewrites the path to that version. A map keyed by model name
takes any model name as it is (HAProxy variable names could not hold '-'), needs no config line
per model, and holds all three numbers in one entry, so one `set map` changes them together:
no request sees a new canary version with an old percent.

HAProxy CLI commands used: `show map` (find the routes map), `show map <file>` (read),
`set map <file> <model> <value>` / `add map ...` when the model has no entry yet (write),
`del map <file> <model>` (clear). Runtime map changes are never written to the file, so a restarted
proxy has no routes: weights() then says `{}` (see base.py for how the driver reconciles).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.local.fleet import LocalFleet
from gpufleet.local.haproxy import ROUTES_MAP_SUFFIX, ROUTES_MAP_VALUE_SEPARATOR
from pipelines.rollout.router.base import Router, Split, Weights, checked_split

# A map key goes into a CLI command line, where whitespace separates words and ';' separates
# commands: only names made of these characters are routed (every gpufleet model name is).
ROUTABLE_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAP_LIST_LINE = re.compile(r"^\S+ \((?P<file>[^)]*)\)")
_ENTRY_NOT_FOUND = "entry not found"


class HAProxyRouter(Router):
    def __init__(self, cluster: str, admin_socket: Path, timeout_s: float = 2.0) -> None:
        self.cluster = cluster
        self.admin_socket = admin_socket
        self.timeout_s = timeout_s
        self._routes_map: str | None = None

    @classmethod
    def for_local_cluster(cls, home: Path, cluster: str) -> HAProxyRouter:
        """The router of a running local cluster, found through the fleet's endpoints."""
        endpoints = LocalFleet(home).endpoints()
        if endpoints is None:
            raise UserError(f"no local fleet is running in {home}; start it with `gpufleet up`")
        return cls(cluster, Path(endpoints.cluster(cluster).admin_socket))

    # -- Router ------------------------------------------------------------------------------
    def set_weights(self, model: str, weights: Mapping[int, int]) -> None:
        split = checked_split(model, weights)
        _check_routable(model)
        routes = self._routes()
        value = ROUTES_MAP_VALUE_SEPARATOR.join(map(str, (split.stable, split.canary, split.canary_percent)))
        reply = self._command(f"set map {routes} {model} {value}")
        if reply.startswith(_ENTRY_NOT_FOUND):
            reply = self._command(f"add map {routes} {model} {value}")
        self._expect_empty(reply, f"setting weights {dict(weights)} for model {model}")

    def weights(self, model: str) -> Weights:
        _check_routable(model)
        routes = self._routes()
        values = {
            parts[2]
            for line in self._command(f"show map {routes}").splitlines()
            if len(parts := line.split()) == 3 and parts[1] == model
        }
        if not values:
            return {}
        if len(values) > 1:
            raise FleetRuntimeError(
                f"proxy of cluster {self.cluster}: model {model} has {len(values)} routes "
                f"({sorted(values)}); set its weights again to replace them"
            )
        return _parse_split(self.cluster, model, values.pop()).as_weights()

    def clear(self, model: str) -> None:
        _check_routable(model)
        reply = self._command(f"del map {self._routes()} {model}")
        if not reply.startswith("Key not found"):  # nothing to clear is cleared
            self._expect_empty(reply, f"clearing the weights of model {model}")

    # -- HAProxy -----------------------------------------------------------------------------
    def _routes(self) -> str:
        """The routes map's file name, as the CLI names the map: found once among the proxy's maps."""
        if self._routes_map is None:
            listing = self._command("show map")
            found = [
                m["file"]
                for line in listing.splitlines()
                if (m := _MAP_LIST_LINE.match(line)) and m["file"].endswith(ROUTES_MAP_SUFFIX)
            ]
            if len(found) != 1:
                raise FleetRuntimeError(
                    f"proxy of cluster {self.cluster} has no canary routes map (*{ROUTES_MAP_SUFFIX}); "
                    "it was started by an older gpufleet: run `gpufleet up` to restart it"
                )
            self._routes_map = found[0]
        return self._routes_map

    def _command(self, command: str) -> str:
        """One command on the admin socket; HAProxy answers and closes (non-interactive mode)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as admin:
                admin.settimeout(self.timeout_s)
                admin.connect(str(self.admin_socket))
                admin.sendall(f"{command}\n".encode())
                reply = bytearray()
                while chunk := admin.recv(65536):
                    reply += chunk
        except OSError as exc:  # missing socket, refused, timed out
            raise FleetRuntimeError(
                f"proxy of cluster {self.cluster} unreachable on its admin socket {self.admin_socket} "
                f"({exc.strerror or exc}); check it with `gpufleet status`"
            ) from exc
        return reply.decode(errors="replace").strip()

    def _expect_empty(self, reply: str, doing: str) -> None:
        if reply:
            first_line = reply.splitlines()[0]
            raise FleetRuntimeError(f"proxy of cluster {self.cluster} refused {doing}: {first_line}")


def _check_routable(model: str) -> None:
    if not ROUTABLE_MODEL.match(model):
        raise UserError(
            f"model name {model!r} cannot be routed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )


def _parse_split(cluster: str, model: str, value: str) -> Split:
    fields = value.split(ROUTES_MAP_VALUE_SEPARATOR)
    try:
        stable, canary, percent = (int(f) for f in fields)
    except ValueError:
        raise FleetRuntimeError(
            f"proxy of cluster {cluster}: the route of model {model} is {value!r}, not "
            "<stable>/<canary>/<canary percent>; set its weights again to replace it"
        ) from None
    return Split(stable, canary, percent)
