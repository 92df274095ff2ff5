"""The VPC of one EKS cluster: private subnets for nodes, public subnets for NAT and load balancers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cdktf import Fn, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.data_aws_availability_zones import (
    DataAwsAvailabilityZones,
    DataAwsAvailabilityZonesFilter,
)
from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.default_security_group import DefaultSecurityGroup
from cdktf_cdktf_provider_aws.eip import Eip
from cdktf_cdktf_provider_aws.flow_log import FlowLog
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.internet_gateway import InternetGateway
from cdktf_cdktf_provider_aws.nat_gateway import NatGateway
from cdktf_cdktf_provider_aws.route_table import RouteTable, RouteTableRoute
from cdktf_cdktf_provider_aws.route_table_association import RouteTableAssociation
from cdktf_cdktf_provider_aws.subnet import Subnet
from cdktf_cdktf_provider_aws.vpc import Vpc
from constructs import Construct

from gpufleet.environments import fit_name
from modules.aws.account import IAM_ROLE_NAME_MAX_LENGTH, AwsAccount
from modules.checkov import skip_check

DEFAULT_CIDR = "10.0.0.0/16"
DEFAULT_AZ_COUNT = 3
# Zones where EKS cannot place a control plane (EKS user guide, "VPC and subnet requirements").
EKS_UNSUPPORTED_ZONE_IDS = ("use1-az3", "usw1-az2", "cac1-az3")
FLOW_LOG_RETENTION_DAYS = 365
ANYWHERE = "0.0.0.0/0"


def subnet_cidrs(vpc_cidr: str, az_count: int) -> tuple[list[str], list[str]]:
    """(private, public) CIDRs, one of each per AZ.

    Private subnets take /19s from the start of a /16 (8k addresses each: the VPC CNI gives every pod a VPC
    address); public subnets hold only NAT gateways and load balancers, so /24s from the last /19.
    """
    blocks = list(ipaddress.IPv4Network(vpc_cidr).subnets(prefixlen_diff=3))
    if az_count < 2 or az_count >= len(blocks):
        raise ValueError(f"az_count must be between 2 and {len(blocks) - 1}, got {az_count}")
    private = [str(block) for block in blocks[:az_count]]
    edge = blocks[-1]
    public = [str(subnet) for subnet in list(edge.subnets(new_prefix=min(edge.prefixlen + 5, 28)))[:az_count]]
    return private, public


@dataclass(frozen=True)
class NetworkProps:
    name: str  # for Name tags, the flow-log group and role
    eks_cluster_name: str  # subnets are tagged for this cluster's load balancers
    account: AwsAccount
    log_key_arn: str  # KMS key for the flow-log group (its policy must allow CloudWatch Logs)
    tags: dict[str, str]
    cidr_block: str = DEFAULT_CIDR
    az_count: int = DEFAULT_AZ_COUNT
    # One NAT gateway for all zones (previews: cheaper) instead of one per zone (a zone outage keeps the
    # other zones' nodes online).
    single_nat_gateway: bool = False
    flow_log_retention_days: int = FLOW_LOG_RETENTION_DAYS


class Network(Construct):
    def __init__(self, scope: Construct, id_: str, props: NetworkProps) -> None:
        super().__init__(scope, id_)
        tags = props.tags

        def named(name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
            return {**tags, "Name": name, **(extra or {})}

        zones = DataAwsAvailabilityZones(
            self,
            "zones",
            state="available",
            exclude_zone_ids=list(EKS_UNSUPPORTED_ZONE_IDS),
            # Regular zones only: no Local Zones or Wavelength zones, which EKS control planes cannot use.
            filter=[DataAwsAvailabilityZonesFilter(name="opt-in-status", values=["opt-in-not-required"])],
        )
        skip_check(
            zones,
            "CKV_AWS_394",
            "zone names map to different zones in every account and fleet.yaml names no zones, so they "
            "cannot be pinned at synth time; subnets ignore later changes of their zone, so a new AZ "
            "never moves one",
        )
        self.vpc = Vpc(
            self,
            "vpc",
            cidr_block=props.cidr_block,
            enable_dns_support=True,
            enable_dns_hostnames=True,  # EKS private endpoint and nodes resolve through VPC DNS
            tags=named(props.name),
        )
        vpc_id = self.vpc.id
        # No rules: anything still landing in the default group gets no traffic (EKS uses its own groups).
        DefaultSecurityGroup(
            self, "default-security-group", vpc_id=vpc_id, tags=named(f"{props.name}-default")
        )

        cluster_tag = {f"kubernetes.io/cluster/{props.eks_cluster_name}": "shared"}
        private_cidrs, public_cidrs = subnet_cidrs(props.cidr_block, props.az_count)
        # A zone list that grows later must not move (replace) a subnet that nodes are running in.
        keep_zone = TerraformResourceLifecycle(ignore_changes=["availability_zone"])
        self.private_subnets: list[Subnet] = []
        self.public_subnets: list[Subnet] = []
        for index, (private_cidr, public_cidr) in enumerate(zip(private_cidrs, public_cidrs, strict=True)):
            # element() wraps around: a region with fewer zones than az_count reuses zones, still >= 2.
            zone = Fn.element(zones.names, index)
            self.public_subnets.append(
                Subnet(
                    self,
                    f"public-{index}",
                    vpc_id=vpc_id,
                    cidr_block=public_cidr,
                    availability_zone=zone,
                    # Only NAT gateways (own Elastic IPs) and load balancers live here; no instance gets
                    # a public address by accident.
                    map_public_ip_on_launch=False,
                    tags=named(
                        f"{props.name}-public-{index}", {"kubernetes.io/role/elb": "1", **cluster_tag}
                    ),
                    lifecycle=keep_zone,
                )
            )
            self.private_subnets.append(
                Subnet(
                    self,
                    f"private-{index}",
                    vpc_id=vpc_id,
                    cidr_block=private_cidr,
                    availability_zone=zone,
                    tags=named(
                        f"{props.name}-private-{index}",
                        {"kubernetes.io/role/internal-elb": "1", **cluster_tag},
                    ),
                    lifecycle=keep_zone,
                )
            )

        internet_gateway = InternetGateway(self, "internet-gateway", vpc_id=vpc_id, tags=named(props.name))
        public_routes = RouteTable(
            self,
            "public-routes",
            vpc_id=vpc_id,
            route=[RouteTableRoute(cidr_block=ANYWHERE, gateway_id=internet_gateway.id)],
            tags=named(f"{props.name}-public"),
        )
        for index, subnet in enumerate(self.public_subnets):
            RouteTableAssociation(
                self, f"public-{index}-routes", subnet_id=subnet.id, route_table_id=public_routes.id
            )

        nat_count = 1 if props.single_nat_gateway else len(self.public_subnets)
        nat_gateways = []
        for index in range(nat_count):
            address = Eip(self, f"nat-{index}-address", domain="vpc", tags=named(f"{props.name}-nat-{index}"))
            nat_gateways.append(
                NatGateway(
                    self,
                    f"nat-{index}",
                    allocation_id=address.id,
                    subnet_id=self.public_subnets[index].id,
                    tags=named(f"{props.name}-nat-{index}"),
                    depends_on=[internet_gateway],
                )
            )
        for index, subnet in enumerate(self.private_subnets):
            nat = nat_gateways[index % nat_count]
            private_routes = RouteTable(
                self,
                f"private-{index}-routes",
                vpc_id=vpc_id,
                route=[RouteTableRoute(cidr_block=ANYWHERE, nat_gateway_id=nat.id)],
                tags=named(f"{props.name}-private-{index}"),
            )
            RouteTableAssociation(
                self, f"private-{index}-association", subnet_id=subnet.id, route_table_id=private_routes.id
            )

        self._flow_logs(props)
        self.vpc_id: str = vpc_id
        self.private_subnet_ids: list[str] = [s.id for s in self.private_subnets]
        self.public_subnet_ids: list[str] = [s.id for s in self.public_subnets]

    def _flow_logs(self, props: NetworkProps) -> None:
        """All VPC traffic metadata to an encrypted CloudWatch log group kept a year (incident forensics)."""
        account = props.account
        log_group = CloudwatchLogGroup(
            self,
            "flow-log-group",
            name=f"/gpufleet/vpc-flow-logs/{props.name}",
            retention_in_days=props.flow_log_retention_days,
            kms_key_id=props.log_key_arn,
            tags=props.tags,
        )
        trust = DataAwsIamPolicyDocument(
            self,
            "flow-log-trust",
            statement=[
                DataAwsIamPolicyDocumentStatement(
                    actions=["sts:AssumeRole"],
                    principals=[
                        DataAwsIamPolicyDocumentStatementPrincipals(
                            type="Service", identifiers=[account.service_principal("vpc-flow-logs")]
                        )
                    ],
                    # Only flow logs of this account may use the role (confused-deputy guard).
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals", variable="aws:SourceAccount", values=[account.account_id]
                        )
                    ],
                )
            ],
        )
        role = IamRole(
            self,
            "flow-log-role",
            name=fit_name(props.name, "flow-logs", max_length=IAM_ROLE_NAME_MAX_LENGTH),
            assume_role_policy=trust.json,
            tags=props.tags,
        )
        write_logs = DataAwsIamPolicyDocument(
            self,
            "flow-log-write",
            statement=[
                DataAwsIamPolicyDocumentStatement(
                    actions=[
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                        "logs:DescribeLogGroups",
                        "logs:DescribeLogStreams",
                    ],
                    resources=[log_group.arn, f"{log_group.arn}:*"],
                )
            ],
        )
        IamRolePolicy(self, "flow-log-write-policy", role=role.id, policy=write_logs.json)
        FlowLog(
            self,
            "flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags=props.tags,
        )
