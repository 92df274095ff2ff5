"""VPC-native network for one GKE cluster: custom-mode VPC, one subnet with pod/service ranges, Cloud NAT."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from gpufleet.environments import fit_name

# GCE names (network, subnetwork, router, NAT, firewall): 1-63 lowercase letters, digits and '-',
# starting with a letter and not ending with '-'. fit_name keeps that shape for names built from a
# cluster name (which starts with a letter).
GCE_NAME_MAX_LENGTH = 63


@dataclass(frozen=True)
class GcpNetworkProps:
    name: str  # base of every resource name: the cluster's name
    project: str
    region: str
    # Private ranges that do not overlap the GKE control plane range (GkeClusterProps.master_cidr).
    nodes_cidr: str = "10.10.0.0/20"
    pods_cidr: str = "10.16.0.0/14"
    services_cidr: str = "10.20.0.0/20"


class GcpNetwork(Construct):
    """Custom-mode VPC, regional subnet with secondary ranges, flow logs, Cloud Router + NAT.

    Private nodes have no external IP; Cloud NAT gives them egress (container images, driver
    downloads, model store over the public Google APIs) and private Google access lets them reach
    Google APIs without NAT.
    """

    pods_range_name: str
    services_range_name: str
    nodes_cidr: str

    def __init__(self, scope: Construct, construct_id: str, props: GcpNetworkProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_google.compute_firewall import ComputeFirewall, ComputeFirewallDeny
        from cdktf_cdktf_provider_google.compute_network import ComputeNetwork
        from cdktf_cdktf_provider_google.compute_router import ComputeRouter
        from cdktf_cdktf_provider_google.compute_router_nat import ComputeRouterNat
        from cdktf_cdktf_provider_google.compute_subnetwork import (
            ComputeSubnetwork,
            ComputeSubnetworkSecondaryIpRange,
        )

        def name(suffix: str) -> str:
            return fit_name(props.name, suffix, max_length=GCE_NAME_MAX_LENGTH)

        self.nodes_cidr = props.nodes_cidr
        self.pods_range_name = "pods"
        self.services_range_name = "services"

        self.network = ComputeNetwork(
            self,
            "network",
            name=name("vpc"),
            project=props.project,
            auto_create_subnetworks=False,  # custom mode: only the subnet below, no subnet per region
            routing_mode="REGIONAL",
        )
        self.subnetwork = ComputeSubnetwork(
            self,
            "subnetwork",
            name=name("nodes"),
            project=props.project,
            region=props.region,
            network=self.network.id,
            ip_cidr_range=props.nodes_cidr,
            private_ip_google_access=True,
            secondary_ip_range=[
                ComputeSubnetworkSecondaryIpRange(
                    range_name=self.pods_range_name, ip_cidr_range=props.pods_cidr
                ),
                ComputeSubnetworkSecondaryIpRange(
                    range_name=self.services_range_name, ip_cidr_range=props.services_cidr
                ),
            ],
            # VPC flow logs: who talked to what, for incident response. Sampled at 50% to bound cost.
            log_config={
                "aggregation_interval": "INTERVAL_5_SEC",
                "flow_sampling": 0.5,
                "metadata": "INCLUDE_ALL_METADATA",
            },
        )
        # Documents the VPC's stance explicitly (GCP's implied rule is the same): nothing from outside
        # reaches the nodes; GKE adds its own narrower allow rules (control plane -> nodes, pod to pod)
        # at higher priority. Logged so blocked probes show up in Cloud Logging.
        self.deny_ingress = ComputeFirewall(
            self,
            "deny-ingress",
            name=name("deny-ingress"),
            project=props.project,
            network=self.network.id,
            direction="INGRESS",
            priority=65534,
            source_ranges=["0.0.0.0/0"],
            deny=[ComputeFirewallDeny(protocol="all")],
            log_config={"metadata": "INCLUDE_ALL_METADATA"},
        )
        self.router = ComputeRouter(
            self,
            "router",
            name=name("router"),
            project=props.project,
            region=props.region,
            network=self.network.id,
        )
        self.nat = ComputeRouterNat(
            self,
            "nat",
            name=name("nat"),
            project=props.project,
            region=props.region,
            router=self.router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            log_config={"enable": True, "filter": "ERRORS_ONLY"},
        )
