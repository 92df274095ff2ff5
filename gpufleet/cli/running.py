"""Finding the local fleet a command works on: its home, its fleet file, its endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gpufleet.cli.app import console
from gpufleet.errors import UserError
from gpufleet.spec import Fleet, load_fleet

if TYPE_CHECKING:
    from gpufleet.local.fleet import FleetEndpoints, LocalFleet
    from gpufleet.spec import ModelSpec


def usable_home(home: Path, *, create: bool) -> Path:
    """The --home folder, checked before anything is started in it (a file or an unwritable folder
    would otherwise fail half-way with an OS error)."""
    if home.exists() and not home.is_dir():
        raise UserError(f"--home {home}: is a file, not a folder; pass a folder (default .gpufleet)")
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True)
            probe = home / ".write-check"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise UserError(
                f"--home {home}: cannot write there ({reason}); pass a folder you can write"
            ) from None
    return home


def local_fleet(home: Path) -> LocalFleet:
    from gpufleet.local.fleet import LocalFleet

    return LocalFleet(usable_home(home, create=False), report=lambda msg: console.log(msg))


def running_endpoints(home: Path) -> FleetEndpoints:
    endpoints = local_fleet(home).endpoints()
    if endpoints is None:
        raise UserError(f"no local fleet is running from {home}; start one with `gpufleet up`")
    return endpoints


def model_of(fleet: Fleet, name: str) -> ModelSpec:
    try:
        return fleet.model(name)
    except KeyError:
        known = ", ".join(m.name for m in fleet.models) or "none declared"
        raise UserError(f"model '{name}' is not in the fleet file; use one of: {known}") from None


def running_model(home: Path, file: Path | None, model: str) -> tuple[ModelSpec, FleetEndpoints]:
    """A model of the running local fleet, and where that fleet answers.

    With a fleet file given, a model missing from it is reported first. Without one, the running
    fleet's own file is read: with nothing running, "start one with `gpufleet up`" is the useful
    message, not a complaint about a fleet.yaml in the current folder."""
    if file is not None:
        spec = model_of(load_fleet(file), model)
        return spec, running_endpoints(home)
    endpoints = running_endpoints(home)
    return model_of(load_fleet(Path(endpoints.fleet_file)), model), endpoints
