"""Build the cdktf App for one cloud of a fleet. Imports only that cloud's provider bindings."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, cast

from cdktf import App

from stacks.context import StackContext
from stacks.provider_imports import import_providers_on_demand

# cloud -> module with `add_stacks(app, ctx) -> list[str]` (names of the stacks it added)
CLOUD_MODULES = {"aws": "stacks.aws", "gcp": "stacks.gcp", "azure": "stacks.azure"}


class CloudStacks(Protocol):
    def add_stacks(self, app: App, ctx: StackContext) -> list[str]: ...


def build_app(ctx: StackContext, cloud: str, outdir: Path) -> tuple[App, list[str]]:
    import_providers_on_demand()
    module = cast(CloudStacks, importlib.import_module(CLOUD_MODULES[cloud]))
    app = App(outdir=str(outdir))
    names = module.add_stacks(app, ctx)
    return app, names
