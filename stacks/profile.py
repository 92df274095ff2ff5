"""The environment profile: how a production environment and a preview are sized, per cloud.

One table, read by the stacks (stacks/aws.py, gcp.py, azure.py) and by whatever prices them: a preview's
cost estimate reads the synthesized stacks, which take every size from here, so the estimate and the
stacks cannot drift apart. Change a size here, never in a stack.

Plain Python (no cdktf import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpufleet.spec import GpuPool, Previews


@dataclass(frozen=True)
class PoolSize:
    min_nodes: int
    max_nodes: int  # 0: the pool is not created (cloud node pools need at least one node of room)
    spot: bool


@dataclass(frozen=True)
class AwsProfile:
    # The untainted node group for cluster services (CoreDNS, GPU operator controllers, monitoring).
    system_nodes: PoolSize
    # Same size (2 vCPU, 8 GiB) in three families: spot previews get capacity from whichever has it.
    system_instance_types: tuple[str, ...]
    # One NAT gateway per zone keeps egress up through a zone loss; a preview shares one.
    nat_gateway_per_zone: bool


@dataclass(frozen=True)
class GcpProfile:
    system_nodes: PoolSize  # whole pool, across the region's zones
    system_machine_type: str
    # Previews must be destroyable by the sweeper without a manual step.
    deletion_protection: bool


@dataclass(frozen=True)
class AzureProfile:
    # The AKS default pool: critical add-ons only (CriticalAddonsOnly taint); AKS allows no spot here.
    system_nodes: PoolSize
    # The untainted pool for cluster services (the role the system pool plays on EKS and GKE).
    platform_nodes: PoolSize
    node_vm_size: str  # system and platform pools
    sku_tier: Literal["Free", "Standard"]  # Standard: financially backed API server SLA
    log_daily_quota_gb: float  # Log Analytics ingestion cap; -1: none


@dataclass(frozen=True)
class EnvironmentProfile:
    kind: Literal["production", "preview"]
    aws: AwsProfile
    gcp: GcpProfile
    azure: AzureProfile
    # Previews: every GPU pool starts at zero nodes, holds at most this many (0: no GPU pools), and runs
    # on spot capacity when gpu_spot. None: the pools are sized as fleet.yaml says.
    gpu_node_cap: int | None = None
    gpu_spot: bool = False

    def gpu_pool_size(self, pool: GpuPool) -> PoolSize:
        if self.gpu_node_cap is None:
            return PoolSize(pool.min_nodes, pool.max_nodes, pool.spot)
        if self.gpu_node_cap == 0:
            return PoolSize(0, 0, pool.spot)
        return PoolSize(0, min(pool.max_nodes, self.gpu_node_cap), self.gpu_spot or pool.spot)


PRODUCTION = EnvironmentProfile(
    kind="production",
    aws=AwsProfile(
        # Two nodes in different zones keep CoreDNS and monitoring up through a zone or node loss.
        system_nodes=PoolSize(min_nodes=2, max_nodes=4, spot=False),
        system_instance_types=("m6i.large", "m6a.large", "m5.large"),
        nat_gateway_per_zone=True,
    ),
    gcp=GcpProfile(
        system_nodes=PoolSize(min_nodes=1, max_nodes=3, spot=False),
        system_machine_type="e2-standard-4",
        deletion_protection=True,
    ),
    azure=AzureProfile(
        system_nodes=PoolSize(min_nodes=2, max_nodes=3, spot=False),
        platform_nodes=PoolSize(min_nodes=1, max_nodes=3, spot=False),
        # 4 vCPU / 16 GiB with a local temp disk, so the OS disk can be ephemeral.
        node_vm_size="Standard_D4ds_v5",
        sku_tier="Standard",
        log_daily_quota_gb=-1,
    ),
)


def preview_profile(previews: Previews) -> EnvironmentProfile:
    """A preview: one node per service pool, spot where the cloud allows it, GPU pools capped by
    fleet.yaml `previews.max_gpu_nodes` and on spot when `previews.spot`, no deletion protection, and
    the AKS Free tier (no uptime SLA for a short-lived environment)."""
    return EnvironmentProfile(
        kind="preview",
        aws=AwsProfile(
            system_nodes=PoolSize(min_nodes=1, max_nodes=2, spot=True),
            system_instance_types=PRODUCTION.aws.system_instance_types,
            nat_gateway_per_zone=False,
        ),
        gcp=GcpProfile(
            system_nodes=PoolSize(min_nodes=1, max_nodes=1, spot=True),
            system_machine_type=PRODUCTION.gcp.system_machine_type,
            deletion_protection=False,
        ),
        azure=AzureProfile(
            system_nodes=PoolSize(min_nodes=1, max_nodes=1, spot=False),
            platform_nodes=PoolSize(min_nodes=1, max_nodes=1, spot=False),
            node_vm_size=PRODUCTION.azure.node_vm_size,
            sku_tier="Free",
            # Enough to debug, small enough not to matter on the bill.
            log_daily_quota_gb=1,
        ),
        gpu_node_cap=previews.max_gpu_nodes,
        gpu_spot=previews.spot,
    )
