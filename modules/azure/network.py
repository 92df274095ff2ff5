"""The virtual network of one AKS cluster: a VNet, the node subnet and its network security group."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

from gpufleet.environments import fit_name

VNET_NAME_MAX_LENGTH = 64
SUBNET_NAME_MAX_LENGTH = 80
NSG_NAME_MAX_LENGTH = 80


@dataclass(frozen=True)
class AzureNetworkProps:
    name: str  # base name; the VNet, subnet and NSG are named <name>-vnet, <name>-nodes, <name>-nodes-nsg
    resource_group_name: str
    location: str
    # Nodes only: pods get overlay addresses (see aks_cluster.py), so a /20 holds 4096 nodes' worth.
    address_space: str = "10.20.0.0/16"
    nodes_cidr: str = "10.20.0.0/20"
    tags: Mapping[str, str] = field(default_factory=dict)


class AzureNetwork(Construct):
    """VNet + node subnet; the subnet carries an NSG with Azure's default rules only.

    AKS keeps its own NSG on the node NICs (in the node resource group) and opens what its load balancers
    need there; the subnet NSG is the place for an operator's extra deny rules and satisfies the
    "every subnet has an NSG" policy (CKV2_AZURE_31). Its defaults allow VNet and load-balancer traffic
    in and deny the rest, so nothing is opened to the internet here.
    """

    vnet_id: str
    subnet_id: str
    nodes_cidr: str

    def __init__(self, scope: Construct, construct_id: str, props: AzureNetworkProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.network_security_group import NetworkSecurityGroup
        from cdktf_cdktf_provider_azurerm.subnet import Subnet
        from cdktf_cdktf_provider_azurerm.subnet_network_security_group_association import (
            SubnetNetworkSecurityGroupAssociation,
        )
        from cdktf_cdktf_provider_azurerm.virtual_network import VirtualNetwork

        tags = dict(props.tags)
        self.vnet = VirtualNetwork(
            self,
            "vnet",
            name=fit_name(props.name, "vnet", max_length=VNET_NAME_MAX_LENGTH),
            resource_group_name=props.resource_group_name,
            location=props.location,
            address_space=[props.address_space],
            tags=tags,
        )
        self.subnet = Subnet(
            self,
            "nodes",
            name=fit_name(props.name, "nodes", max_length=SUBNET_NAME_MAX_LENGTH),
            resource_group_name=props.resource_group_name,
            virtual_network_name=self.vnet.name,
            address_prefixes=[props.nodes_cidr],
            # Egress goes through the cluster's load balancer; no implicit VM outbound IPs.
            default_outbound_access_enabled=False,
        )
        self.nsg = NetworkSecurityGroup(
            self,
            "nodes-nsg",
            name=fit_name(props.name, "nodes-nsg", max_length=NSG_NAME_MAX_LENGTH),
            resource_group_name=props.resource_group_name,
            location=props.location,
            tags=tags,
        )
        self.nsg_association = SubnetNetworkSecurityGroupAssociation(
            self, "nodes-nsg-association", subnet_id=self.subnet.id, network_security_group_id=self.nsg.id
        )
        self.vnet_id = self.vnet.id
        self.subnet_id = self.subnet.id
        self.nodes_cidr = props.nodes_cidr
