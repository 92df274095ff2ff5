"""Stack outputs -> inventory and kubeconfig (pipelines/configure/inventory.py).

The outputs are built from the TerraformOutput names the cluster stacks really declare (read from
stacks/<cloud>.py, sensitive flag included), with values shaped as each cloud's API gives them. The
inventory is read back by `ansible-inventory`, the kubeconfig by `kubectl config view` where kubectl is
at hand, and `terraform output -json` runs for real on a stack applied with only literal outputs.
"""

from __future__ import annotations

import ast
import base64
import datetime
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gpufleet.errors import UserError
from gpufleet.spec import Fleet, load_fleet
from pipelines.configure import inventory as inv
from tests.conftest import REPO

ENV = "prod"
CLUSTERS = {"aws": "aws-use1", "gcp": "gke-usc1", "azure": "aks-eus"}
# How each cloud's API gives the endpoint (EKS `endpoint` and AKS `fqdn` as the stacks format them: URLs;
# GKE `endpoint`: the control plane's IP address alone).
ENDPOINTS = {
    "aws": "https://0123456789ABCDEF0123456789ABCDEF.gr7.us-east-1.eks.amazonaws.com",
    "gcp": "34.118.1.2",
    "azure": "https://aks-eus-prod-k8s-1a2b3c4d.privatelink.eastus.azmk8s.io:443",
}
SERVERS = {
    "aws": ENDPOINTS["aws"],
    "gcp": "https://34.118.1.2",
    "azure": ENDPOINTS["azure"],
}
EXEC_COMMANDS = {"aws": "aws", "gcp": "gke-gcloud-auth-plugin", "azure": "kubelogin"}


def declared_outputs(cloud: str) -> dict[str, bool]:
    """{output name: sensitive} of the cluster stack in stacks/<cloud>.py, read from its source."""
    tree = ast.parse((REPO / "stacks" / f"{cloud}.py").read_text())
    (stack,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ClusterStack"]
    found: dict[str, bool] = {}
    for node in ast.walk(stack):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TerraformOutput":
            name = node.args[1]
            assert isinstance(name, ast.Constant)
            sensitive = any(
                k.arg == "sensitive" and isinstance(k.value, ast.Constant) and k.value.value
                for k in node.keywords
            )
            found[str(name.value)] = bool(sensitive)
    return found


@pytest.fixture(scope="module")
def ca_certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ca_data(ca_certificate: x509.Certificate) -> str:
    # The three clouds give the CA as base64 of the PEM (EKS certificate_authority.data, GKE
    # master_auth.cluster_ca_certificate, AKS kube_config.cluster_ca_certificate).
    return base64.b64encode(ca_certificate.public_bytes(serialization.Encoding.PEM)).decode()


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(REPO / "fleet.yaml")


def output_value(cloud: str, name: str, ca: str) -> Any:
    if name == "cluster_endpoint":
        return ENDPOINTS[cloud]
    if name == "cluster_ca_certificate":
        return ca
    if name.endswith("_names"):
        return [f"gpu-{name}-1"]
    return f"{cloud}-{name}-value"


def deployed_outputs(cloud: str, ca: str) -> dict[str, Any]:
    """What `terraform output` gives once the stack is deployed: every declared output with a value."""
    return {name: output_value(cloud, name, ca) for name in declared_outputs(cloud)}


def cdktf_outputs_file(tmp_path: Path, stacks: dict[str, dict[str, Any]], cloud: str) -> Path:
    """As `cdktf deploy --outputs-file` writes it without --outputs-file-include-sensitive-outputs:
    {stack: {output: value}}, sensitive outputs left out."""
    sensitive = {n for n, s in declared_outputs(cloud).items() if s}
    content = {stack: {k: v for k, v in out.items() if k not in sensitive} for stack, out in stacks.items()}
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(content, indent=2))
    return path


# ---------------------------------------------------------------------------------------------------


def test_the_stacks_declare_what_configure_reads() -> None:
    for cloud, required in inv.REQUIRED_OUTPUTS.items():
        missing = set(required) - set(declared_outputs(cloud))
        assert not missing, f"stacks/{cloud}.py ClusterStack declares no output {missing}"


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_kubeconfig_from_outputs(
    cloud: str, fleet: Fleet, ca_data: str, ca_certificate: x509.Certificate, tmp_path: Path
) -> None:
    cluster = inv.find_cluster(fleet, CLUSTERS[cloud])
    stack = inv.stack_name(fleet, cluster, ENV)  # type: ignore[arg-type]
    assert stack == f"{ENV}-{CLUSTERS[cloud]}"  # stacks/app.py: <env>-<cluster>
    outputs = deployed_outputs(cloud, ca_data)
    target = inv.target_for(cluster, outputs, stack)
    path = inv.write_kubeconfig(target, tmp_path)
    assert path.stat().st_mode & 0o077 == 0  # owner only
    config = yaml.safe_load(path.read_text())

    assert config["apiVersion"] == "v1" and config["kind"] == "Config"
    (context,) = config["contexts"]
    assert config["current-context"] == context["name"]
    (entry,) = [c for c in config["clusters"] if c["name"] == context["context"]["cluster"]]
    (user,) = [u for u in config["users"] if u["name"] == context["context"]["user"]]
    assert entry["cluster"]["server"] == SERVERS[cloud]
    pem = base64.b64decode(entry["cluster"]["certificate-authority-data"])
    assert x509.load_pem_x509_certificate(pem) == ca_certificate
    exec_ = user["user"]["exec"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert exec_["command"] == EXEC_COMMANDS[cloud]
    args = exec_.get("args", [])
    if cloud == "aws":  # `aws eks get-token --cluster-name NAME --region REGION` (AWS CLI reference)
        assert args[args.index("get-token") - 1] == "eks"
        assert args[args.index("--cluster-name") + 1] == outputs["cluster_name"]
        assert args[args.index("--region") + 1] == outputs["region"]
    elif cloud == "gcp":  # the plugin reads the cluster from the kubeconfig
        assert exec_["provideClusterInfo"] is True
    else:  # kubelogin with the AKS AAD server application as audience
        assert args[0] == "get-token"
        assert args[args.index("--server-id") + 1] == "6dae42f8-4368-4678-94ff-3960e28e3630"

    kubectl = shutil.which("kubectl")
    if kubectl:  # kubectl's own parser agrees
        shown = subprocess.run(
            [kubectl, "config", "view", "--raw", "-o", "json", "--kubeconfig", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        seen = json.loads(shown.stdout)
        assert seen["current-context"] == context["name"]
        assert seen["clusters"][0]["cluster"]["server"] == SERVERS[cloud]
        assert seen["users"][0]["user"]["exec"]["command"] == EXEC_COMMANDS[cloud]


def ansible_inventory(tmp_path: Path, inventory: dict[str, Any]) -> dict[str, Any]:
    """The inventory as ansible itself reads it (`ansible-inventory --list`)."""
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    binary = Path(sys.executable).parent / "ansible-inventory"
    out = subprocess.run(
        [str(binary), "-i", str(path), "--list"], capture_output=True, text=True, check=True, timeout=60
    )
    return dict(json.loads(out.stdout))


def test_eks_inventory(fleet: Fleet, ca_data: str, tmp_path: Path) -> None:
    outputs = deployed_outputs("aws", ca_data)
    stack = f"{ENV}-aws-use1"
    path = cdktf_outputs_file(tmp_path, {stack: outputs, f"{ENV}-shared-aws": {"store_url": "s3://x"}}, "aws")
    read = inv.outputs_from_file(path, stack)
    assert read == outputs  # nothing sensitive on AWS
    prepared = inv.prepare(
        fleet, "aws-use1", tmp_path / "work", outputs_file=path, which=lambda _: "/usr/bin/true", probe=False
    )
    listed = ansible_inventory(tmp_path, prepared.inventory)
    assert listed["clusters"]["hosts"] == ["aws-use1"]
    assert "hosts" not in listed.get("gpu_hosts", {})  # the EKS GPU AMI brings driver and toolkit
    host = listed["_meta"]["hostvars"]["aws-use1"]
    assert host["ansible_connection"] == "local"
    assert host["node_kind"] == "eks"
    assert host["cluster_name"] == outputs["cluster_name"]
    assert host["region"] == outputs["region"]
    assert host["kubeconfig"] == str(prepared.kubeconfig) and Path(host["kubeconfig"]).is_file()
    assert host["cluster_autoscaler_role_arn"] == outputs["cluster_autoscaler_role_arn"]
    assert host["cluster_autoscaler_namespace"] == outputs["cluster_autoscaler_namespace"]
    assert host["cluster_autoscaler_service_account"] == outputs["cluster_autoscaler_service_account"]
    # Pools by their fleet.yaml names: the gpufleet.io/pool label the validation pods select on.
    assert host["gpu_pools"] == [p["name"] for p in yaml_cluster("aws-use1")["gpu_pools"]]
    assert host["cloud_pool_names"] == outputs["node_group_names"]
    for var in (
        "gpu_operator_enabled",
        "gpu_operator_values",
        "cluster_autoscaler_values",
        "monitoring_values",
    ):
        assert var in host, var
        assert prepared.extra_vars[var] == host[var]
    assert prepared.extra_vars["kubeconfig"] == host["kubeconfig"]
    # The autoscaler's values are bound to the stack's role.
    assert outputs["cluster_autoscaler_role_arn"] in json.dumps(host["cluster_autoscaler_values"])


def yaml_cluster(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "fleet.yaml").read_text())
    (entry,) = [c for c in doc["clusters"] if c["name"] == name]
    return dict(entry)


def test_local_inventory_is_localhost_in_both_groups(fleet: Fleet, tmp_path: Path) -> None:
    prepared = inv.prepare(fleet, "local-a", tmp_path / "work")
    assert prepared.kubeconfig is None and not (tmp_path / "work").exists()
    listed = ansible_inventory(tmp_path, prepared.inventory)
    assert listed["clusters"]["hosts"] == ["localhost"]
    assert listed["gpu_hosts"]["hosts"] == ["localhost"]
    host = listed["_meta"]["hostvars"]["localhost"]
    assert host["node_kind"] == "local"
    assert host["cluster_name"] == "local-a"
    assert host["kubeconfig"] == ""
    assert host["ansible_connection"] == "local"


def test_cdktf_outputs_file_without_sensitive_outputs_names_the_flag(
    fleet: Fleet, ca_data: str, tmp_path: Path
) -> None:
    stack = f"{ENV}-aks-eus"
    path = cdktf_outputs_file(tmp_path, {stack: deployed_outputs("azure", ca_data)}, "azure")
    with pytest.raises(UserError) as caught:
        inv.prepare(fleet, "aks-eus", tmp_path / "w", outputs_file=path, which=lambda _: "/x", probe=False)
    message = str(caught.value)
    assert stack in message and "cluster_ca_certificate" in message
    # Says why this output is missing from the file, not only how such a file is written.
    assert (
        "cluster_ca_certificate is sensitive: write the file with --outputs-file-include-sensitive-outputs"
        in message
    )
    assert "\n" not in message


def test_outputs_file_of_other_stacks_is_not_deployed(fleet: Fleet, ca_data: str, tmp_path: Path) -> None:
    path = cdktf_outputs_file(tmp_path, {f"{ENV}-aws-use1": deployed_outputs("aws", ca_data)}, "aws")
    with pytest.raises(UserError) as caught:
        inv.prepare(fleet, "gke-usc1", tmp_path / "w", outputs_file=path, which=lambda _: "/x", probe=False)
    message = str(caught.value)
    assert f"stack {ENV}-gke-usc1" in message and f"cdktf deploy {ENV}-gke-usc1" in message
    assert f"{ENV}-aws-use1" in message  # what the file does hold


def test_unknown_cluster(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no cluster named 'nope'.*local-a, local-b, aws-use1"):
        inv.prepare(fleet, "nope", tmp_path)


def test_missing_token_plugin_is_named(fleet: Fleet, ca_data: str, tmp_path: Path) -> None:
    stack = f"{ENV}-gke-usc1"
    path = tmp_path / "tf.json"  # a saved `terraform output -json`
    path.write_text(json.dumps({k: {"value": v} for k, v in deployed_outputs("gcp", ca_data).items()}))
    with pytest.raises(UserError, match="gke-gcloud-auth-plugin.*not on PATH; install"):
        inv.prepare(fleet, "gke-usc1", tmp_path / "w", outputs_file=path, which=lambda _: None, probe=False)
    assert inv.outputs_from_file(path, stack)["project"] == "gcp-project-value"


def test_a_certificate_that_is_not_one_is_refused(fleet: Fleet, ca_data: str) -> None:
    outputs = deployed_outputs("aws", "bm90IGEgY2VydA==")  # base64 of "not a cert"
    with pytest.raises(UserError, match="cluster_ca_certificate is not a base64 PEM"):
        inv.target_for(inv.find_cluster(fleet, "aws-use1"), outputs, "prod-aws-use1")


# --- reaching the API ------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_private_api_names_both_ways(fleet: Fleet, ca_data: str) -> None:
    outputs = deployed_outputs("aws", ca_data) | {"cluster_endpoint": f"https://127.0.0.1:{closed_port()}"}
    target = inv.target_for(inv.find_cluster(fleet, "aws-use1"), outputs, "prod-aws-use1")
    with pytest.raises(UserError) as caught:
        inv.probe_api(target, timeout_s=1)
    message = str(caught.value)
    assert "aws-use1" in message and "cannot be reached" in message
    assert "inside the cluster's network" in message  # way 1: a runner in the network
    assert "endpoint_public_access: true" in message and "public_access_cidrs" in message  # way 2
    assert "\n" not in message


def test_unreachable_public_api_names_the_allow_list(ca_data: str, tmp_path: Path) -> None:
    text = (
        (REPO / "fleet.yaml")
        .read_text()
        .replace(
            "endpoint_public_access: false",
            "endpoint_public_access: true\n    public_access_cidrs: [203.0.113.0/24]",
        )
    )
    (tmp_path / "fleet.yaml").write_text(text)
    fleet = load_fleet(tmp_path / "fleet.yaml")
    outputs = deployed_outputs("aws", ca_data) | {"cluster_endpoint": f"https://127.0.0.1:{closed_port()}"}
    target = inv.target_for(inv.find_cluster(fleet, "aws-use1"), outputs, "prod-aws-use1")
    with pytest.raises(
        UserError, match=r"public_access_cidrs \[203\.0\.113\.0/24\].*inside the cluster's network"
    ):
        inv.probe_api(target, timeout_s=1)


def test_reachable_api_passes(fleet: Fleet, ca_data: str) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        outputs = deployed_outputs("gcp", ca_data) | {"cluster_endpoint": f"127.0.0.1:{port}"}
        target = inv.target_for(inv.find_cluster(fleet, "gke-usc1"), outputs, "prod-gke-usc1")
        assert target.server == f"https://127.0.0.1:{port}"
        inv.probe_api(target, timeout_s=1)


# --- terraform output, for real ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def terraform() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.skip("terraform not on PATH (make setup-all documents it)")
    return found


def literal_stack(
    folder: Path, outputs: dict[str, Any], sensitive: set[str], backend: dict[str, Any] | None = None
) -> None:
    """A synthesized stack folder whose only content is the outputs (no provider: nothing to download)."""
    folder.mkdir(parents=True)
    body: dict[str, Any] = {"terraform": {"backend": backend}} if backend else {}
    body |= {
        "output": {
            k: {"value": v, **({"sensitive": True} if k in sensitive else {})} for k, v in outputs.items()
        }
    }
    (folder / "cdk.tf.json").write_text(json.dumps(body))


def test_outputs_from_terraform_of_a_deployed_stack(terraform: str, ca_data: str, tmp_path: Path) -> None:
    stack = f"{ENV}-aks-eus"
    outputs = deployed_outputs("azure", ca_data)
    sensitive = {n for n, s in declared_outputs("azure").items() if s}
    assert "cluster_ca_certificate" in sensitive  # the case the outputs file cannot carry by default
    folder = tmp_path / "cdktf.out" / "stacks" / stack
    literal_stack(folder, outputs, sensitive)

    for cmd in ([terraform, "init", "-input=false"], [terraform, "apply", "-auto-approve", "-input=false"]):
        subprocess.run(cmd, cwd=folder, capture_output=True, check=True, timeout=120)
    assert inv.outputs_from_terraform(stack, tmp_path / "cdktf.out") == outputs


def test_outputs_from_terraform_before_deploy(terraform: str, tmp_path: Path) -> None:
    stack = f"{ENV}-gke-usc1"
    with pytest.raises(UserError, match=rf"stack {stack}: no synthesized stack .*gpufleet synth"):
        inv.outputs_from_terraform(stack, tmp_path / "cdktf.out")
    folder = tmp_path / "cdktf.out" / "stacks" / stack
    literal_stack(folder, {"cluster_name": "x"}, set())
    subprocess.run(
        [terraform, "init", "-input=false"], cwd=folder, capture_output=True, check=True, timeout=120
    )
    # Initialised but never applied: terraform has no outputs to give.
    assert inv.outputs_from_terraform(stack, tmp_path / "cdktf.out") == {}
    fleet = load_fleet(REPO / "fleet.yaml")
    with pytest.raises(
        UserError, match=rf"stack {stack}: no outputs \(not deployed yet\).*cdktf deploy {stack}"
    ):
        inv.prepare(fleet, "gke-usc1", tmp_path / "w", synth_dir=tmp_path / "cdktf.out")


def test_outputs_from_terraform_of_a_stack_never_initialised(terraform: str, tmp_path: Path) -> None:
    """A remote backend that `cdktf deploy` never initialised here: terraform's own error, in one line."""
    stack = f"{ENV}-aws-use1"
    folder = tmp_path / "cdktf.out" / "stacks" / stack
    backend = {
        "s3": {
            "bucket": "gpufleet-demo-models-prod-tfstate",
            "key": f"prod/{stack}.tfstate",
            "region": "us-east-1",
        }
    }
    literal_stack(folder, {"cluster_name": "x"}, set(), backend)
    with pytest.raises(UserError) as caught:
        inv.outputs_from_terraform(stack, tmp_path / "cdktf.out")
    message = str(caught.value)
    assert f"stack {stack}: `terraform output` failed" in message
    assert "Error: Backend initialization required" in message and f"cdktf deploy {stack}" in message
    assert "\n" not in message
