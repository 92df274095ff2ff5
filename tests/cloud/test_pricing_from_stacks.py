"""The estimate of the real example preview prices what its synthesized stacks contain: the node,
gateway and control-plane counts are taken straight from the JSON here and compared with the items."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pipelines.previews.pricing import CostEstimate, estimate_from_synth
from tests.cloud.conftest import Synthesized


def _counted(synth: Synthesized) -> dict[tuple[str, str], int]:
    """Per (stack, kind): nodes at each pool's maximum, NAT gateways, control planes, read from the JSON."""
    counts: Counter[tuple[str, str]] = Counter()
    for name, stack in synth.stacks().items():
        res: dict[str, dict[str, Any]] = stack.get("resource", {})
        for group in res.get("aws_eks_node_group", {}).values():
            counts[name, "nodes"] += group["scaling_config"]["max_size"]
        for pool in res.get("google_container_node_pool", {}).values():
            # The stacks size GKE pools for the whole pool (total_*); a per-zone size would need zones.
            counts[name, "nodes"] += pool["autoscaling"]["total_max_node_count"]
        for cluster in res.get("azurerm_kubernetes_cluster", {}).values():
            counts[name, "nodes"] += cluster["default_node_pool"]["max_count"]
        for pool in res.get("azurerm_kubernetes_cluster_node_pool", {}).values():
            counts[name, "nodes"] += pool["max_count"]
        counts[name, "nat gateway"] += len(res.get("aws_nat_gateway", {}))
        counts[name, "nat gateway"] += len(res.get("google_compute_router_nat", {}))
        counts[name, "nat gateway"] += len(res.get("azurerm_nat_gateway", {}))
        for rtype in ("aws_eks_cluster", "google_container_cluster", "azurerm_kubernetes_cluster"):
            counts[name, "control plane"] += len(res.get(rtype, {}))
    return {key: n for key, n in counts.items() if n}


def _priced(estimate: CostEstimate) -> dict[tuple[str, str], int]:
    counts: Counter[tuple[str, str]] = Counter()
    for cluster in estimate.clusters:
        for item in cluster.items:
            if item.kind in ("nodes", "nat gateway", "control plane"):
                counts[cluster.stack, item.kind] += item.count
    return {key: n for key, n in counts.items() if n}


@pytest.mark.parametrize("which", ["synthesized_preview", "synthesized"])
def test_estimate_counts_what_the_stacks_build(which: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesized = request.getfixturevalue(which)
    estimate = estimate_from_synth(synth.outdir)  # the packaged prices: every type the stacks use is priced
    assert _priced(estimate) == _counted(synth)
    clusters = {c.cloud for c in estimate.clusters if c.cluster}
    assert clusters == {"aws", "gcp", "azure"}
    assert all(c.usd_per_hour > 0 for c in estimate.clusters if c.cluster)


def test_preview_costs_less_than_the_environment(
    synthesized_preview: Synthesized, synthesized: Synthesized
) -> None:
    preview = estimate_from_synth(synthesized_preview.outdir)
    environment = estimate_from_synth(synthesized.outdir)
    assert 0 < preview.usd_per_hour < environment.usd_per_hour
    # The example AWS preview has one NAT gateway (the stacks' preview profile), production one per zone.
    aws_nats = [
        len(synth.resources(name, "aws_nat_gateway"))
        for synth in (synthesized_preview, synthesized)
        for name in synth.stack_names()
        if synth.resources(name, "aws_eks_cluster")
    ]
    assert aws_nats[0] < aws_nats[1]
