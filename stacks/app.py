"""Build the cdktf App for one cloud of a fleet. Imports only that cloud's provider bindings.

One composer for every cloud: a cloud module (stacks/aws.py, gcp.py, azure.py) says how to build its
shared stack and one cluster stack; how they fit together is decided here, once. A base environment
gets `<env>-shared-<cloud>` (model store, remote state) and `<env>-<cluster>` per cluster, and every
cluster stack depends on the shared stack: its state lives in the shared stack's bucket and it grants
Triton access to the shared store, so `cdktf deploy` must finish the shared stack first. Previews add
only cluster stacks; they reuse the base environment's shared stack, which already exists.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

from cdktf import App, TerraformStack
from constructs import Construct

from gpufleet.spec import CloudCluster
from stacks.context import StackContext
from stacks.provider_imports import import_providers_on_demand

CLOUD_MODULES = {"aws": "stacks.aws", "gcp": "stacks.gcp", "azure": "stacks.azure"}


class SharedStackType(Protocol):
    def __call__(
        self, scope: Construct, name: str, ctx: StackContext, clusters: Sequence[CloudCluster]
    ) -> TerraformStack: ...


class ClusterStackType(Protocol):
    def __call__(
        self, scope: Construct, name: str, ctx: StackContext, cluster: CloudCluster
    ) -> TerraformStack: ...


class CloudStacks(Protocol):
    """What a cloud module provides: its shared stack and its cluster stack."""

    CLOUD: str
    SharedStack: SharedStackType
    ClusterStack: ClusterStackType


def compose_stacks(app: App, ctx: StackContext, cloud: CloudStacks) -> list[str]:
    """Add the environment's stacks of one cloud to the app; return their names (shared stack first)."""
    clusters = [c for c in ctx.fleet.cloud_clusters() if c.cloud == cloud.CLOUD]
    if not clusters:
        return []
    names: list[str] = []
    shared: TerraformStack | None = None
    if not ctx.is_preview:
        name = ctx.stack_name("shared", cloud.CLOUD)
        shared = cloud.SharedStack(app, name, ctx, clusters)
        names.append(name)
    for cluster in clusters:
        name = ctx.stack_name(cluster.name)
        stack = cloud.ClusterStack(app, name, ctx, cluster)
        if shared is not None:
            stack.add_dependency(shared)
        names.append(name)
    return names


def build_app(ctx: StackContext, cloud: str, outdir: Path) -> tuple[App, list[str]]:
    import_providers_on_demand()
    module = cast(CloudStacks, importlib.import_module(CLOUD_MODULES[cloud]))
    outdir.mkdir(parents=True, exist_ok=True)  # cdktf creates only the last folder of the path
    app = App(outdir=str(outdir))
    names = compose_stacks(app, ctx, module)
    return app, names
