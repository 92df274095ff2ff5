"""playbooks/: syntax check, ansible-lint (production profile), site.yml in check mode on this machine
for bare-metal, EKS and local hosts and a local cluster (no GPU: the driver role skips with its reason;
a second run changes nothing), and the GPU validation pod rendered and validated.

The playbook runs go through ansible-runner, as `gpufleet configure` does, and read its events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import ansible_runner
import jinja2
import kubernetes_validate
import pytest
import yaml

from gpufleet import node_contract

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
SITE = PLAYBOOKS / "site.yml"
VENV_BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.35.0"
NVIDIA_PCI_VENDOR = "0x10de"  # PCI-SIG vendor id of NVIDIA


def _nvidia_pci_gpus() -> list[str]:
    """NVIDIA display-class devices on this machine's PCI bus, read here without the role."""
    found = []
    for device in Path("/sys/bus/pci/devices").glob("*"):
        try:
            vendor = (device / "vendor").read_text().strip()
            pci_class = (device / "class").read_text().strip()
        except OSError:
            continue
        if vendor == NVIDIA_PCI_VENDOR and pci_class.startswith("0x03"):
            found.append(device.name)
    return found


HAS_NVIDIA_GPU = bool(_nvidia_pci_gpus()) or shutil.which("nvidia-smi") is not None


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
    }


def _local_host() -> dict[str, str]:
    # The venv's interpreter: interpreter discovery on a shared machine may find a broken shim.
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}


def _inventory(gpu_hosts: dict[str, Any], clusters: dict[str, Any]) -> dict[str, Any]:
    return {"all": {"children": {"gpu_hosts": {"hosts": gpu_hosts}, "clusters": {"hosts": clusters}}}}


def _run_site(tmp: Path, inventory: dict[str, Any], extravars: dict[str, Any], check: bool) -> Any:
    tmp.mkdir(parents=True, exist_ok=True)
    result = ansible_runner.run(
        private_data_dir=str(tmp),
        project_dir=str(PLAYBOOKS),
        playbook=str(SITE),
        inventory=yaml.safe_dump(inventory),
        extravars=extravars,
        cmdline="--check" if check else None,
        envvars={"PATH": _env()["PATH"], "ANSIBLE_NOCOLOR": "1"},
        quiet=True,
        timeout=120,
    )
    return result


def _debug_messages(result: Any, role: str) -> list[tuple[str, str]]:
    """(host, message) of every debug task of the role that ran."""
    messages = []
    for event in result.events:
        data = event.get("event_data", {})
        is_debug = data.get("task_action") in ("debug", "ansible.builtin.debug")
        if event.get("event") == "runner_on_ok" and data.get("role") == role and is_debug:
            messages.append((data["host"], data["res"]["msg"]))
    return messages


def _facts_set(result: Any, role: str, host: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for event in result.events:
        data = event.get("event_data", {})
        if event.get("event") == "runner_on_ok" and data.get("role") == role and data.get("host") == host:
            facts.update(data.get("res", {}).get("ansible_facts", {}))
    return facts


def _stdout(result: Any) -> str:
    return "".join(str(event.get("stdout", "")) + "\n" for event in result.events)


def test_site_syntax_check(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            _inventory(
                {"gpu-node-1": {"node_kind": "bare_metal"}},
                {"local-a": {**_local_host(), "node_kind": "local", "cluster_name": "local-a"}},
            )
        )
    )
    run = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), str(SITE)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "playbook: " in run.stdout


def test_ansible_lint_production_profile_clean() -> None:
    run = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "--profile", "production", "--nocolor", "playbooks"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in run.stdout + run.stderr


def test_requirements_pin_the_collections_the_ansible_package_ships() -> None:
    """requirements.yml documents versions; the installed collections (their MANIFEST.json) are the fact."""
    import ansible_collections

    root = Path(next(iter(ansible_collections.__path__)))
    pinned = yaml.safe_load((PLAYBOOKS / "requirements.yml").read_text())["collections"]
    assert pinned, "requirements.yml lists no collections"
    for collection in pinned:
        namespace, name = collection["name"].split(".")
        manifest = json.loads((root / namespace / name / "MANIFEST.json").read_text())
        assert manifest["collection_info"]["version"] == collection["version"], collection["name"]


# One run covers every host kind: inventory hosts are names for this machine with their own node_kind.
HOST_KINDS = {"metal-node": "bare_metal", "eks-node": "eks", "local-a": "local"}
DRIVER_SAYS = {
    "metal-node": "no NVIDIA GPU on this host (no PCI device with vendor 0x10de",
    "eks-node": "node_kind eks: the node image brings the NVIDIA driver; not installing it",
    "local-a": "node_kind local: the local fleet serves without a GPU driver",
}
TOOLKIT_SAYS = {
    "metal-node": "no NVIDIA driver on this host",
    "eks-node": "node_kind eks: the node image brings the NVIDIA container toolkit",
    "local-a": "node_kind local: the local fleet runs tritonserver as a process",
}


def _per_host(messages: list[tuple[str, str]]) -> dict[str, list[str]]:
    by_host: dict[str, list[str]] = {}
    for host, message in messages:
        by_host.setdefault(host, []).append(message)
    return by_host


@pytest.fixture(scope="module")
def site_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """site.yml twice in check mode: metal, EKS and local hosts, plus local-a as a cluster (local fleet)."""
    if HAS_NVIDIA_GPU:
        pytest.skip(
            "this machine has an NVIDIA GPU or driver; test_driver_detection_on_a_gpu_machine covers it"
        )
    hosts = {name: {**_local_host(), "node_kind": kind} for name, kind in HOST_KINDS.items()}
    clusters = {"local-a": {**hosts["local-a"], "cluster_name": "local-a"}}
    inventory = _inventory(hosts, clusters)
    root = tmp_path_factory.mktemp("site")
    return [_run_site(root / f"run{attempt}", inventory, {}, check=True) for attempt in (1, 2)]


def test_host_roles_skip_without_gpu_saying_why(site_runs: list[Any]) -> None:
    first = site_runs[0]
    assert first.rc == 0 and first.status == "successful", _stdout(first)[-4000:]
    assert first.stats["failures"] == {} and first.stats["dark"] == {}
    driver = _per_host(_debug_messages(first, "nvidia_driver"))
    toolkit = _per_host(_debug_messages(first, "container_toolkit"))
    for host in HOST_KINDS:
        assert len(driver[host]) == 1 and DRIVER_SAYS[host] in driver[host][0], (host, driver)
        assert len(toolkit[host]) == 1 and TOOLKIT_SAYS[host] in toolkit[host][0], (host, toolkit)
        facts = _facts_set(first, "nvidia_driver", host)
        assert facts["nvidia_driver_installed"] is False
        assert facts["nvidia_driver_version"] == "" and facts["nvidia_cuda_version"] == ""
        assert facts["nvidia_gpus"] == []


def test_local_cluster_validation_skips_without_an_api(site_runs: list[Any]) -> None:
    validation = _per_host(_debug_messages(site_runs[0], "gpu_validation"))
    assert list(validation) == ["local-a"] and "no Kubernetes API" in validation["local-a"][0], validation


def test_site_changes_nothing_on_either_run(site_runs: list[Any]) -> None:
    for attempt, result in enumerate(site_runs, start=1):
        assert result.rc == 0, _stdout(result)[-4000:]
        assert result.stats["changed"] == {}, f"run {attempt} changed: {result.stats['changed']}"
        assert set(result.stats["ok"]) == set(HOST_KINDS)


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU and driver (nvidia-smi)")
def test_driver_detection_on_a_gpu_machine(tmp_path: Path) -> None:
    """On a GPU machine the facts equal what nvidia-smi says when asked directly."""
    query = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    names = [line.split(", ")[0] for line in query]
    header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=True).stdout
    cuda = header.split("CUDA Version:")[1].split()[0]
    result = _run_site(
        tmp_path, _inventory({"localhost": _local_host()}, {}), {"node_kind": "bare_metal"}, True
    )
    assert result.rc == 0, _stdout(result)[-4000:]
    facts = _facts_set(result, "nvidia_driver", "localhost")
    print(json.dumps({k: facts[k] for k in ("nvidia_driver_version", "nvidia_cuda_version", "nvidia_gpus")}))
    assert facts["nvidia_driver_installed"] is True
    assert facts["nvidia_driver_version"] == query[0].split(", ")[1]
    assert facts["nvidia_cuda_version"] == cuda
    assert [gpu["name"] for gpu in facts["nvidia_gpus"]] == names
    assert "already installed; nothing to install" in _debug_messages(result, "nvidia_driver")[0][1]
    assert result.stats["changed"] == {}


def _render_validation_pod(pool: str) -> dict[str, Any]:
    role = PLAYBOOKS / "roles" / "gpu_validation"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(role / "templates"), undefined=jinja2.StrictUndefined
    )
    rendered = environment.get_template("validation_pod.yaml.j2").render(**defaults, pool=pool)
    pod = yaml.safe_load(rendered)
    assert isinstance(pod, dict)
    return pod


def test_validation_pod_is_valid_and_lands_on_the_pools_gpu_nodes() -> None:
    pod = _render_validation_pod("a10g")
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    spec = pod["spec"]
    # The node contract's own constants, not the role's defaults, say where the pod must land.
    assert spec["nodeSelector"] == {
        node_contract.LABEL_NODE_ROLE: node_contract.ROLE_GPU,
        node_contract.LABEL_POOL: "a10g",
    }
    taint = node_contract.GPU_TAINT
    assert spec["tolerations"] == [
        {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}
    ]
    (container,) = spec["containers"]
    assert container["command"] == ["nvidia-smi", "-L"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    image = container["image"]
    assert image.startswith("nvcr.io/nvidia/cuda:") and not image.endswith(":latest")
    assert spec["restartPolicy"] == "Never"
    assert pod["metadata"]["name"] == "gpufleet-validate-a10g"


def test_validation_pod_names_fit_kubernetes_for_the_longest_pool_name() -> None:
    # Pool names are at most 12 characters (gpufleet.naming); the pod name must stay a DNS label.
    pod = _render_validation_pod("p" * 12)
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert len(pod["metadata"]["name"]) <= 63
