"""A cluster's stack outputs -> the Ansible inventory and the kubeconfig `gpufleet configure` runs with.

Outputs come from the deployed stack: `terraform output -json` in its synthesized folder
(cdktf.out/stacks/<stack>, whatever the backend: terraform reads the state where the stack keeps it),
or from a file: the one `cdktf deploy --outputs-file FILE` writes ({stack: {output: value}}, sensitive
outputs only with --outputs-file-include-sensitive-outputs), or `terraform output -json` saved to a file.

Inventory (playbooks/site.yml reads it):
- `clusters`: one host per cluster, connection local, host vars node_kind, cluster_name, region,
  kubeconfig, gpu_pools, the autoscaler binding (EKS) and the values of pipelines/configure/values.py;
- `gpu_hosts`: machines whose driver and toolkit the host roles manage: none on EKS/GKE/AKS (the node
  images bring them), localhost for the local fleet.
A local cluster is localhost in both groups, node_kind local, no kubeconfig.

The clusters' API is private by default, so before anything runs its endpoint is probed (TCP connect):
unreachable -> one line naming both ways in (a runner inside the network, or endpoint_public_access +
public_access_cidrs with the runner's network).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from gpufleet.errors import UserError
from gpufleet.spec import AwsCluster, AzureCluster, CloudCluster, Fleet, GcpCluster, LocalCluster
from stacks.context import DEFAULT_OUTDIR, StackContext

Outputs = dict[str, Any]  # output name -> value, as the stack declares them (stacks/aws.py, gcp.py, azure.py)
Which = Callable[[str], str | None]

NODE_KIND_OF_CLOUD: Final = {"aws": "eks", "gcp": "gke", "azure": "aks", "local": "local"}
LOCALHOST: Final = "localhost"
PROBE_TIMEOUT_S: Final = 3.0
TERRAFORM_TIMEOUT_S: Final = 120
KUBECONFIG_NAME: Final = "kubeconfig"

# What each cloud's cluster stack must output for an inventory and a kubeconfig (the TerraformOutput
# names in stacks/<cloud>.py).
COMMON_OUTPUTS: Final = ("cluster_name", "cluster_endpoint", "cluster_ca_certificate", "region")
REQUIRED_OUTPUTS: Final = {
    "aws": (
        *COMMON_OUTPUTS,
        "node_group_names",
        "cluster_autoscaler_role_arn",
        "cluster_autoscaler_namespace",
        "cluster_autoscaler_service_account",
    ),
    "gcp": (*COMMON_OUTPUTS, "project", "node_pool_names"),
    "azure": (*COMMON_OUTPUTS, "resource_group", "node_pool_names"),
}
POOL_NAMES_OUTPUT: Final = {"aws": "node_group_names", "gcp": "node_pool_names", "azure": "node_pool_names"}
# Outputs the stacks mark sensitive: `cdktf deploy --outputs-file` leaves them out unless asked.
SENSITIVE_OUTPUTS: Final = {"azure": ("cluster_ca_certificate",)}

# Client credentials: the exec plugins of each cloud (client.authentication.k8s.io/v1beta1).
EXEC_API_VERSION: Final = "client.authentication.k8s.io/v1beta1"
# The application id of the Azure Kubernetes Service AAD Server: the audience of every AKS cluster with
# Entra ID integration (modules/azure/aks_cluster.py: local accounts disabled, Azure RBAC).
AKS_AAD_SERVER_ID: Final = "6dae42f8-4368-4678-94ff-3960e28e3630"
AUTH_TOOLS: Final = {
    "eks": (
        "aws",
        "install AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html)",
    ),
    "gke": (
        "gke-gcloud-auth-plugin",
        "install it with `gcloud components install gke-gcloud-auth-plugin` (or the distribution's "
        "google-cloud-cli-gke-gcloud-auth-plugin package)",
    ),
    "aks": (
        "kubelogin",
        "install it with `az aks install-cli` (https://azure.github.io/kubelogin/install.html)",
    ),
}


def _one_line(text: object, limit: int) -> str:
    """A message on one line, cut to `limit` characters (gpufleet.errors.one_line takes exceptions)."""
    return " ".join(str(text).split())[:limit]


@dataclass(frozen=True)
class AutoscalerBinding:
    """The IRSA role the stack made for cluster-autoscaler, and the service account it trusts."""

    role_arn: str
    namespace: str
    service_account: str


@dataclass(frozen=True)
class ClusterTarget:
    """What `gpufleet configure` knows about one cluster once its stack is deployed."""

    fleet_cluster: str  # the fleet.yaml name
    cloud: str
    node_kind: str  # eks | gke | aks | local
    cluster_name: str  # the cloud's name (stack output cluster_name); the fleet name locally
    stack: str | None = None
    region: str | None = None
    server: str | None = None  # https URL of the Kubernetes API
    ca_data: str | None = None  # base64 PEM, as kubeconfig certificate-authority-data takes it
    gpu_pools: tuple[str, ...] = ()  # fleet.yaml pool names (label gpufleet.io/pool) the stack built
    cloud_pool_names: tuple[str, ...] = ()  # the cloud's node group / node pool names
    autoscaler: AutoscalerBinding | None = None
    project: str | None = None  # gcp
    resource_group: str | None = None  # azure
    endpoint_public_access: bool = False
    public_access_cidrs: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        return self.node_kind == "local"


# ---------------------------------------------------------------------------------------------------
# Which cluster, which stack


def find_cluster(fleet: Fleet, name: str) -> CloudCluster | LocalCluster:
    for cluster in fleet.clusters:
        if cluster.name == name:
            return cluster
    known = ", ".join(c.name for c in fleet.clusters)
    raise UserError(f"CLUSTER: no cluster named {name!r} in the fleet file; clusters are: {known}")


def stack_name(fleet: Fleet, cluster: CloudCluster, environment: str) -> str:
    """The cluster's stack in `environment`, named as stacks/app.py names it."""
    return StackContext(fleet=fleet, environment=environment).stack_name(cluster.name)


# ---------------------------------------------------------------------------------------------------
# Reading outputs


def _not_deployed(stack: str, why: str) -> UserError:
    return UserError(
        f"stack {stack}: {why}; deploy it first (`cdktf deploy {stack}`), or pass --outputs FILE written by "
        f"`cdktf deploy {stack} --outputs-file FILE --outputs-file-include-sensitive-outputs`"
    )


def outputs_from_terraform(
    stack: str, synth_dir: Path = Path(DEFAULT_OUTDIR), which: Which = shutil.which
) -> Outputs:
    """`terraform output -json` in the stack's synthesized folder (terraform reads its backend's state)."""
    stack_dir = synth_dir / "stacks" / stack
    if not (stack_dir / "cdk.tf.json").is_file():
        raise _not_deployed(
            stack, f"no synthesized stack in {stack_dir} (run `gpufleet synth --out {synth_dir}`)"
        )
    terraform = which("terraform")
    if terraform is None:
        raise UserError(
            "terraform not found on PATH (needed to read the stack outputs); install Terraform >= 1.10, "
            "or pass --outputs FILE written by `cdktf deploy --outputs-file FILE`"
        )
    try:
        result = subprocess.run(
            [terraform, "output", "-json", "-no-color"],
            cwd=stack_dir,
            capture_output=True,
            text=True,
            timeout=TERRAFORM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _not_deployed(
            stack, f"`terraform output` gave no answer within {TERRAFORM_TIMEOUT_S} s"
        ) from None
    if result.returncode != 0:
        # Terraform's own error line ("Error: Backend initialization required, ..."), not its warnings.
        lines = [ln.strip("│╷╵ ") for ln in result.stderr.splitlines()]
        errors = [ln for ln in lines if ln.startswith("Error:")]
        detail = _one_line(errors[0] if errors else " ".join(lines[-3:]), 200) or f"exit {result.returncode}"
        raise _not_deployed(stack, f"`terraform output` failed in {stack_dir} ({detail})")
    try:
        raw = json.loads(result.stdout or "{}")
    except ValueError:
        raise _not_deployed(stack, "`terraform output -json` printed no JSON") from None
    return _unwrap_terraform_outputs(raw)


def _unwrap_terraform_outputs(raw: object) -> Outputs:
    """`terraform output -json` gives {name: {value, type, sensitive}}: keep the values."""
    if not isinstance(raw, dict):
        return {}
    return {k: v["value"] for k, v in raw.items() if isinstance(v, dict) and "value" in v}


def outputs_from_file(path: Path, stack: str) -> Outputs:
    """A stack's outputs from `cdktf deploy --outputs-file` ({stack: {name: value}}) or a saved
    `terraform output -json` ({name: {"value": ...}})."""
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"--outputs {path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise UserError(f"--outputs {path}: not JSON ({_one_line(exc, 120)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--outputs {path}: expected a JSON object of stacks (`cdktf deploy --outputs-file`)")
    if isinstance(raw.get(stack), dict):
        return dict(raw[stack])
    if raw and all(isinstance(v, dict) and "value" in v for v in raw.values()):
        return _unwrap_terraform_outputs(raw)
    found = ", ".join(sorted(raw)) or "none"
    raise _not_deployed(stack, f"--outputs {path} holds no outputs of it (stacks in the file: {found})")


# ---------------------------------------------------------------------------------------------------
# Outputs -> target


def _missing_outputs_problem(cluster: CloudCluster, stack: str, outputs: Outputs) -> str | None:
    missing = [name for name in REQUIRED_OUTPUTS[cluster.cloud] if outputs.get(name) in (None, "")]
    if not missing:
        return None
    sensitive = [m for m in missing if m in SENSITIVE_OUTPUTS.get(cluster.cloud, ())]
    hint = (
        f" ({', '.join(sensitive)} is sensitive: write the file with "
        "--outputs-file-include-sensitive-outputs)"
        if sensitive
        else ""
    )
    return f"no output {', '.join(missing)}{hint}"


def _server_url(endpoint: str) -> str:
    # EKS and AKS give an https URL; GKE gives the control plane's address alone.
    return endpoint if endpoint.startswith("https://") else f"https://{endpoint}"


def _checked_ca(stack: str, value: str) -> str:
    try:
        pem = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pem = b""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise _not_deployed(stack, "output cluster_ca_certificate is not a base64 PEM certificate")
    return value


def _pool_names(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def target_for(
    cluster: CloudCluster | LocalCluster, outputs: Outputs | None = None, stack: str | None = None
) -> ClusterTarget:
    """The cluster as configure sees it; a cloud cluster needs its stack's outputs."""
    if isinstance(cluster, LocalCluster):
        return ClusterTarget(
            fleet_cluster=cluster.name, cloud="local", node_kind="local", cluster_name=cluster.name
        )
    stack = stack or cluster.name
    outputs = outputs or {}
    if not outputs:
        raise _not_deployed(stack, "no outputs (not deployed yet)")
    problem = _missing_outputs_problem(cluster, stack, outputs)
    if problem:
        raise _not_deployed(stack, problem)
    cloud_pools = _pool_names(outputs[POOL_NAMES_OUTPUT[cluster.cloud]])
    autoscaler = None
    if isinstance(cluster, AwsCluster):
        autoscaler = AutoscalerBinding(
            role_arn=str(outputs["cluster_autoscaler_role_arn"]),
            namespace=str(outputs["cluster_autoscaler_namespace"]),
            service_account=str(outputs["cluster_autoscaler_service_account"]),
        )
    return ClusterTarget(
        fleet_cluster=cluster.name,
        cloud=cluster.cloud,
        node_kind=NODE_KIND_OF_CLOUD[cluster.cloud],
        cluster_name=str(outputs["cluster_name"]),
        stack=stack,
        region=str(outputs["region"]),
        server=_server_url(str(outputs["cluster_endpoint"])),
        ca_data=_checked_ca(stack, str(outputs["cluster_ca_certificate"])),
        # A stack builds no GPU pool where the environment sizes it to zero (previews): none to check then.
        gpu_pools=tuple(p.name for p in cluster.gpu_pools) if cloud_pools else (),
        cloud_pool_names=cloud_pools,
        autoscaler=autoscaler,
        project=str(outputs["project"]) if isinstance(cluster, GcpCluster) else None,
        resource_group=str(outputs["resource_group"]) if isinstance(cluster, AzureCluster) else None,
        endpoint_public_access=cluster.endpoint_public_access,
        public_access_cidrs=tuple(cluster.public_access_cidrs),
    )


# ---------------------------------------------------------------------------------------------------
# Kubeconfig


def exec_credentials(target: ClusterTarget) -> dict[str, Any]:
    """The kubeconfig `user.exec` block: short-lived tokens from each cloud's own CLI plugin."""
    if target.node_kind == "eks":
        return {
            "apiVersion": EXEC_API_VERSION,
            "command": "aws",
            "args": [
                "--region",
                target.region,
                "eks",
                "get-token",
                "--cluster-name",
                target.cluster_name,
                "--output",
                "json",
            ],
            "interactiveMode": "Never",
        }
    if target.node_kind == "gke":
        return {
            "apiVersion": EXEC_API_VERSION,
            "command": "gke-gcloud-auth-plugin",
            "installHint": AUTH_TOOLS["gke"][1],
            "provideClusterInfo": True,
            "interactiveMode": "IfAvailable",
        }
    if target.node_kind == "aks":
        # --login azurecli uses `az login`; AAD_LOGIN_METHOD (e.g. workloadidentity, spn) overrides it.
        return {
            "apiVersion": EXEC_API_VERSION,
            "command": "kubelogin",
            "args": ["get-token", "--login", "azurecli", "--server-id", AKS_AAD_SERVER_ID],
            "interactiveMode": "IfAvailable",
        }
    raise ValueError(f"no kubeconfig for node kind {target.node_kind}")


def kubeconfig_for(target: ClusterTarget) -> dict[str, Any]:
    """A kubeconfig (v1 Config) with one cluster, one user (exec plugin), one current context."""
    if target.server is None or target.ca_data is None:
        raise ValueError(f"{target.fleet_cluster}: a local cluster has no Kubernetes API")
    name = target.fleet_cluster
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": target.server, "certificate-authority-data": target.ca_data}}
        ],
        "users": [{"name": name, "user": {"exec": exec_credentials(target)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(target: ClusterTarget, folder: Path) -> Path:
    """The cluster's kubeconfig in `folder`, readable by the owner only (kubectl warns otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KUBECONFIG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(kubeconfig_for(target), out, sort_keys=False)
    os.chmod(path, 0o600)
    return path


def auth_tool_problem(target: ClusterTarget, which: Which = shutil.which) -> str | None:
    """The kubeconfig's exec plugin, when it is not on PATH (every API call would fail with it missing)."""
    tool = AUTH_TOOLS.get(target.node_kind)
    if tool is None or which(tool[0]) is not None:
        return None
    command, install = tool
    return f"{target.fleet_cluster}: its kubeconfig gets tokens from `{command}`, not on PATH; {install}"


# ---------------------------------------------------------------------------------------------------
# Reaching the API


def api_address(server: str) -> tuple[str, int]:
    parts = urlsplit(server)
    return parts.hostname or server, parts.port or 443


def unreachable_message(target: ClusterTarget, problem: str) -> str:
    where = f"the Kubernetes API of {target.fleet_cluster} ({target.server}) {problem}"
    if target.endpoint_public_access:
        cidrs = ", ".join(target.public_access_cidrs)
        return (
            f"{where}: its public endpoint admits only public_access_cidrs [{cidrs}]; run gpufleet configure "
            "from a runner inside the cluster's network, or add this runner's network to the cluster's "
            "public_access_cidrs in the fleet file and `cdktf deploy` again"
        )
    return (
        f"{where}: the API is private (endpoint_public_access: false); run gpufleet configure from a runner "
        "inside the cluster's network (VPC/VNet, via VPN or peering), or set endpoint_public_access: true "
        "with public_access_cidrs listing this runner's network on the cluster in the fleet file and "
        "`cdktf deploy` again"
    )


def probe_api(target: ClusterTarget, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """A TCP connect to the API endpoint: cheap, and tells a private endpoint from a broken playbook."""
    if target.server is None:
        return
    host, port = api_address(target.server)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except TimeoutError:
        problem = f"gave no answer within {timeout_s:g} s"
    except OSError as exc:
        problem = f"cannot be reached ({_one_line(exc.strerror or exc, 100)})"
    raise UserError(unreachable_message(target, problem))


# ---------------------------------------------------------------------------------------------------
# Inventory and extra vars


def cluster_values(cluster: CloudCluster | LocalCluster, outputs: Outputs) -> dict[str, Any]:
    """The roles' extra vars computed from the spec and outputs (pipelines/configure/values.py)."""
    from pipelines.configure.values import cluster_values as computed

    return computed(cluster, outputs).extra_vars()


def host_vars(target: ClusterTarget, kubeconfig: Path | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """The `clusters` host's variables: what site.yml's cluster roles read."""
    host: dict[str, Any] = {
        "ansible_connection": "local",
        # The venv's Python: it has the kubernetes client kubernetes.core's modules import.
        "ansible_python_interpreter": sys.executable,
        **values,
        "node_kind": target.node_kind,
        "cluster_name": target.cluster_name,
        "fleet_cluster": target.fleet_cluster,
        "kubeconfig": str(kubeconfig) if kubeconfig else "",
        "gpu_pools": list(target.gpu_pools),
    }
    if target.region:
        host["region"] = target.region
    if target.cloud_pool_names:
        host["cloud_pool_names"] = list(target.cloud_pool_names)
    if target.autoscaler:
        host |= {
            "cluster_autoscaler_role_arn": target.autoscaler.role_arn,
            "cluster_autoscaler_namespace": target.autoscaler.namespace,
            "cluster_autoscaler_service_account": target.autoscaler.service_account,
        }
    if target.project:
        host["project"] = target.project
    if target.resource_group:
        host["resource_group"] = target.resource_group
    return host


def build_inventory(
    target: ClusterTarget, kubeconfig: Path | None, values: Mapping[str, Any]
) -> dict[str, Any]:
    """The YAML inventory as a dict: `clusters` with this cluster's host, `gpu_hosts` (localhost or none)."""
    hostname = LOCALHOST if target.is_local else target.fleet_cluster
    gpu_hosts: dict[str, Any] = {LOCALHOST: None} if target.is_local else {}
    return {
        "all": {
            "children": {
                "clusters": {"hosts": {hostname: host_vars(target, kubeconfig, values)}},
                "gpu_hosts": {"hosts": gpu_hosts},
            }
        }
    }


@dataclass(frozen=True)
class Prepared:
    """Everything one `gpufleet configure` run needs, written under its folder."""

    target: ClusterTarget
    inventory: dict[str, Any]
    extra_vars: dict[str, Any]
    kubeconfig: Path | None


def prepare(
    fleet: Fleet,
    cluster_name: str,
    workdir: Path,
    *,
    environment: str = "prod",
    outputs_file: Path | None = None,
    synth_dir: Path = Path(DEFAULT_OUTDIR),
    which: Which = shutil.which,
    probe: bool = True,
) -> Prepared:
    """Read the cluster's outputs, write its kubeconfig, check the API answers, build the inventory."""
    cluster = find_cluster(fleet, cluster_name)
    outputs: Outputs = {}
    stack = None
    if not isinstance(cluster, LocalCluster):
        stack = stack_name(fleet, cluster, environment)
        if outputs_file is not None:
            outputs = outputs_from_file(outputs_file, stack)
        else:
            outputs = outputs_from_terraform(stack, synth_dir, which)
    target = target_for(cluster, outputs, stack)
    kubeconfig = None
    if not target.is_local:
        problem = auth_tool_problem(target, which)
        if problem:
            raise UserError(problem)
        kubeconfig = write_kubeconfig(target, workdir)
        if probe:
            probe_api(target)
    values = cluster_values(cluster, outputs)
    inventory = build_inventory(target, kubeconfig, values)
    extra_vars = {**values, "kubeconfig": str(kubeconfig) if kubeconfig else ""}
    return Prepared(target=target, inventory=inventory, extra_vars=extra_vars, kubeconfig=kubeconfig)
