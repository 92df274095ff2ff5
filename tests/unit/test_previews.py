"""Preview environments: names, the cost cap, finding them by tag, preflight, down and sweep.

Fast and offline: EKS through moto in-process, GKE through the real ClusterManagerClient talking gRPC
to an in-process fake server; no cdktf import, no terraform run.
"""

from __future__ import annotations

import copy
import json
import os
import re
import string
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpufleet import catalog, naming
from gpufleet.clouds import aws as aws_cloud
from gpufleet.clouds import azure, price_table
from gpufleet.environments import environment_problem, fit_name, preview_environment, slug
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import Fleet
from pipelines.previews import inventory, lifecycle
from pipelines.previews import synth as preview_synth
from pipelines.previews.inventory import CloudClients, PreviewRecord, group_previews, list_previews
from pipelines.previews.lifecycle import preflight, preview_destroyer, preview_down, preview_up, sweep
from pipelines.previews.pricing import estimate_from_synth, estimate_preview
from pipelines.previews.synth import PreviewTarget, preview_stack_context
from stacks.context import TAG_BASE_ENVIRONMENT, TAG_OWNER, Preview, StackContext
from stacks.synth import SynthOptions
from tests.conftest import REPO

EXAMPLE_DOC: dict[str, Any] = yaml.safe_load((REPO / "fleet.yaml").read_text())
NOW = 1_800_000_000  # a whole hour, like every preview expiry
HOUR = 3600


def catalog_price(cloud: str, instance_type: str) -> float:
    entry = catalog.instance_type(cloud, instance_type)
    assert entry is not None
    return entry.on_demand_usd_per_hour


EKS_STANDARD = price_table()["aws"].control_plane_usd_per_hour["STANDARD"]


def write_synth(outdir: Path, stacks: dict[str, dict[str, Any]]) -> Path:
    """A synth output folder as cdktf writes it: manifest.json naming stacks/<name>/cdk.tf.json."""
    for name, body in stacks.items():
        path = outdir / "stacks" / name / "cdk.tf.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body))
    manifest = {name: {"synthesizedStackPath": f"stacks/{name}/cdk.tf.json"} for name in stacks}
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "manifest.json").write_text(json.dumps({"version": "x", "stacks": manifest}))
    return outdir


def example_fleet(**previews: Any) -> Fleet:
    doc = copy.deepcopy(EXAMPLE_DOC)
    doc["previews"] = {**doc["previews"], **previews}
    return Fleet.model_validate(doc)


# ---------------------------------------------------------------------------------------------------
# Preview environment names

PREVIEW_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")

branches = st.one_of(
    st.text(),  # any unicode, empty included
    st.text(alphabet=string.ascii_letters + string.digits + "/-_.", max_size=60),  # git-like
    st.text(alphabet="機能ü/-_. ", max_size=30),  # little or nothing left after the slug
    st.text(min_size=200, max_size=2000),
)


@given(branches)
@example("")
@example("機能")
@example("///")
@example("feature/" + "x" * 500)
@example("\ud800")  # a lone surrogate: git would refuse it, the name must still be valid
def test_preview_environment_is_a_valid_short_name(branch: str) -> None:
    name = preview_environment(branch)
    assert len(name) <= 20
    assert PREVIEW_NAME.fullmatch(name), name
    assert "--" not in name
    assert name.startswith("pv-")
    assert environment_problem(name) is None
    assert preview_environment(branch) == name  # deterministic


# Words joined by separators the slug treats alike, maybe in capitals or with accents the slug folds
# away: two branches made from the same words slug the same.
words = st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=6)
separators = st.sampled_from(["/", "-", "_", ".", " ", "\t", "--", "/-", "+"])
spellings = st.sampled_from([str, str.upper, lambda w: w.replace("e", "\u00e9").replace("a", "\u00c5")])


@given(words, separators, separators, spellings)
def test_branches_with_the_same_slug_get_different_names(
    parts: list[str], sep_a: str, sep_b: str, spell_b: Callable[[str], str]
) -> None:
    branch_a = sep_a.join(parts)
    branch_b = sep_b.join(spell_b(p) for p in parts)
    if branch_a == branch_b:
        return
    assert slug(branch_a) == slug(branch_b)
    assert preview_environment(branch_a) != preview_environment(branch_b)


def _label(max_length: int) -> st.SearchStrategy[str]:
    return st.from_regex(rf"[a-z]([-a-z0-9]{{0,{max_length - 2}}}[a-z0-9])?", fullmatch=True).map(
        lambda s: re.sub(r"-+", "-", s)
    )


s3_buckets = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True).filter(
    lambda b: naming.s3_bucket_problem(b) is None
)
container_buckets = st.from_regex(r"[a-z0-9]([a-z0-9]|-(?=[a-z0-9])){2,62}", fullmatch=True).filter(
    lambda b: naming.azure_container_problem(b) is None and naming.gcs_bucket_problem(b) is None
)
storage_accounts = st.from_regex(r"[a-z0-9]{3,24}", fullmatch=True)


@given(branches, _label(40), _label(63), _label(100))
def test_cluster_names_with_a_preview_stay_valid(branch: str, gke: str, aks: str, eks: str) -> None:
    env = preview_environment(branch)
    assert naming.cluster_name_problem("gcp", fit_name(gke, env, max_length=40)) is None
    assert naming.cluster_name_problem("azure", fit_name(aks, env, max_length=63)) is None
    assert naming.cluster_name_problem("aws", fit_name(eks, env, max_length=100)) is None


@given(branches, s3_buckets, container_buckets, storage_accounts)
@settings(max_examples=200)
def test_store_names_with_a_preview_stay_valid(
    branch: str, s3_bucket: str, shared_bucket: str, account: str
) -> None:
    env = preview_environment(branch)
    # A bucket of an aws-only fleet: S3 rules.
    assert naming.s3_bucket_problem(fit_name(s3_bucket, env, max_length=63)) is None
    # A bucket of a fleet on every cloud: S3, GCS and Blob container rules at once.
    shared = fit_name(shared_bucket, env, max_length=63)
    assert naming.s3_bucket_problem(shared) is None
    assert naming.gcs_bucket_problem(shared) is None
    assert naming.azure_container_problem(shared) is None
    storage = fit_name(account, env, max_length=24, alnum_only=True)
    assert naming.azure_storage_account_problem(storage) is None


@pytest.mark.parametrize("base", ["sthree", "amzn-s3-demo"])
def test_base_names_that_would_compose_into_a_reserved_s3_prefix_are_rejected(base: str) -> None:
    # <base>-<env> would start with a prefix S3 reserves: the spec refuses such a base up front.
    assert naming.s3_bucket_problem(fit_name(base, preview_environment("main"), max_length=63)) is not None
    assert naming.s3_bucket_problem(base) is not None
    assert naming.s3_bucket_problem("sthreefold-models") is None  # only the reserved prefix itself


# ---------------------------------------------------------------------------------------------------
# Up: synth, estimate from that synth, cost cap, then deploy


class Recorder:
    """A runner or synth that records its calls instead of running cdktf; its synths write `stack` (a
    cdk.tf.json body) under each stack name, as a real synth would, so the estimate has something to read."""

    def __init__(
        self, status: int = 0, stacks: tuple[str, ...] = (), stack: dict[str, Any] | None = None
    ) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.status, self.stacks, self.stack = status, stacks, stack or {}

    def run(self, cmd: list[str], cwd: Path) -> int:
        self.calls.append((cmd, cwd))
        return self.status

    def _write(self, outdir: Path) -> dict[str, object]:
        write_synth(outdir, {name: self.stack for name in self.stacks})
        return {"version": "x", "stacks": {name: {} for name in self.stacks}}

    def synth(self, clouds: list[str], options: SynthOptions, outdir: Path) -> dict[str, object]:
        self.calls.append((clouds, options, outdir))
        return self._write(outdir)

    def synth_target(
        self, clouds: list[str], fleet_file: Path, target: PreviewTarget, outdir: Path
    ) -> dict[str, object]:
        self.calls.append((clouds, fleet_file, target, outdir))
        return self._write(outdir)


def gpu_nodes_stack(nodes: int) -> dict[str, Any]:
    """A stack of only an EKS node group of `nodes` on-demand g5.xlarge."""
    group = {
        "instance_types": ["g5.xlarge"],
        "capacity_type": "ON_DEMAND",
        "scaling_config": {"max_size": nodes},
    }
    return {"resource": {"aws_eks_node_group": {"gpu": group}}}


# The GPU catalog's price, the source pricing takes GPU types from (not the pricing code).
G5_XLARGE = catalog_price("aws", "g5.xlarge")


def test_preview_above_the_cost_cap_is_refused_after_synth_before_deploy(tmp_path: Path) -> None:
    fleet = example_fleet(cost_cap_usd_per_day=20)
    runner, synth = Recorder(), Recorder(stacks=("pv-a",), stack=gpu_nodes_stack(3))
    shown: list[float] = []
    with pytest.raises(UserError) as raised:
        preview_up(
            tmp_path / "fleet.yaml",
            fleet,
            "feature/x",
            "alice",
            tmp_path / "out",
            runner.run,
            yes=True,
            synth=synth.synth,
            show_estimate=lambda estimate: shown.append(estimate.usd_per_day),
        )
    message = str(raised.value)
    assert "previews.cost_cap_usd_per_day" in message
    assert f"${3 * G5_XLARGE * 24:.2f}/day" in message  # 3 nodes the synthesized stack declares
    assert shown == [pytest.approx(3 * G5_XLARGE * 24)]
    assert "(20)" in message and "\n" not in message
    assert len(synth.calls) == 1 and runner.calls == []  # synthesized and priced, never deployed
    assert not (tmp_path / "out").exists()  # and nothing left behind


def test_a_sizing_estimate_synthesizes_a_preview_and_prices_it(tmp_path: Path) -> None:
    synth = Recorder(stacks=("pv-a", "pv-b"), stack=gpu_nodes_stack(2))
    estimate = estimate_preview(tmp_path / "f.yaml", example_fleet(), tmp_path / "sizing", synth=synth.synth)
    [(clouds, options, outdir)] = synth.calls
    assert clouds == ["aws", "gcp", "azure"] and outdir == tmp_path / "sizing"
    assert options.branch is not None and options.environment == "prod"  # a preview, not prod's stacks
    assert estimate.usd_per_hour == pytest.approx(2 * 2 * G5_XLARGE)


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No terraform, no cdktf, no az on PATH; no AWS, GCP or Azure credentials anywhere."""
    from google.auth.compute_engine import _metadata

    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in [n for n in os.environ if n.startswith(("AWS_", "ARM_", "GOOGLE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    # Not on GCE, even when the tests run on a GCE machine.
    monkeypatch.setattr(_metadata, "is_on_gce", lambda request=None: False)
    return tmp_path / "repo"  # a repo root without node_modules/.bin/cdktf


def test_preflight_names_every_missing_piece(bare_machine: Path) -> None:
    problems = preflight(example_fleet(), ["aws", "gcp", "azure"], repo_root=bare_machine)
    assert problems[0].startswith("terraform not found on PATH")
    assert problems[1].startswith("cdktf CLI not found")
    by_cloud = {p.split(":")[0]: p for p in problems[2:]}
    assert by_cloud.keys() == {"aws", "gcp", "azure"}
    assert "AWS_PROFILE" in by_cloud["aws"]
    assert "gcloud auth application-default login" in by_cloud["gcp"]
    assert "az login" in by_cloud["azure"]
    assert all("\n" not in p for p in problems)


def test_preflight_checks_only_the_clouds_asked(bare_machine: Path) -> None:
    problems = preflight(example_fleet(), ["aws"], repo_root=bare_machine)
    assert not any(p.startswith(("gcp", "azure")) for p in problems)


def test_azure_needs_a_subscription_id(bare_machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARM_USE_MSI", "true")
    problems = preflight(example_fleet(), ["azure"], repo_root=bare_machine)
    assert [p for p in problems if p.startswith("azure")] == [azure.AZURE_NO_SUBSCRIPTION]


def test_preview_up_stops_at_preflight_before_deploying(bare_machine: Path, tmp_path: Path) -> None:
    runner, synth = Recorder(), Recorder(stacks=("pv-a",), stack=gpu_nodes_stack(1))
    with pytest.raises(UserError) as raised:
        preview_up(
            tmp_path / "fleet.yaml",
            example_fleet(),
            "feature/x",
            "alice",
            tmp_path / "out",
            runner.run,
            yes=True,
            repo_root=bare_machine,
            synth=synth.synth,
        )
    message = str(raised.value)
    assert "\n" not in message
    for needle in ("terraform", "cdktf", "aws:", "gcp:", "azure:"):
        assert needle in message
    assert runner.calls == []


@pytest.fixture
def ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repo root with a cdktf CLI, preflight passing: what happens after the checks."""
    cdktf = tmp_path / "repo" / "node_modules" / ".bin" / "cdktf"
    cdktf.parent.mkdir(parents=True)
    cdktf.write_text("#!/bin/sh\nexit 0\n")
    cdktf.chmod(0o755)
    monkeypatch.setattr(lifecycle, "preflight", lambda *args, **kwargs: [])
    return tmp_path / "repo"


def test_preview_up_synthesizes_prices_and_deploys_in_that_order(ready: Path, tmp_path: Path) -> None:
    stacks = ("pv-feature-x-aws-use1", "pv-feature-x-gke-usc1", "pv-feature-x-aks-eus")
    events: list[str] = []
    runner, synth = Recorder(), Recorder(stacks=stacks, stack=gpu_nodes_stack(1))

    def run(cmd: list[str], cwd: Path) -> int:
        events.append("deploy")
        return runner.run(cmd, cwd)

    def synthesize(clouds: list[str], options: SynthOptions, outdir: Path) -> dict[str, object]:
        events.append("synth")
        return synth.synth(clouds, options, outdir)

    fleet = example_fleet(cost_cap_usd_per_day=3 * G5_XLARGE * 24 + 1)  # just above the estimate
    result = preview_up(
        tmp_path / "fleet.yaml",
        fleet,
        "feature/x",
        "alice",
        tmp_path / "out",
        run,
        yes=True,
        now=NOW + 1234,
        repo_root=ready,
        synth=synthesize,
        show_estimate=lambda estimate: events.append("estimate"),
    )
    assert events == ["synth", "estimate", "deploy"]
    expires_at = NOW + 72 * HOUR  # the hour the preview started, plus previews.ttl_hours
    assert result.environment == preview_environment("feature/x")
    assert result.stacks == stacks and result.expires_at == expires_at
    assert result.estimate.usd_per_hour == pytest.approx(3 * G5_XLARGE)  # one node in each of 3 stacks
    assert synth.calls == [
        (
            ["aws", "gcp", "azure"],
            SynthOptions(tmp_path / "fleet.yaml", "prod", "feature/x", "alice", expires_at),
            tmp_path / "out",
        )
    ]
    cdktf = str(ready / "node_modules" / ".bin" / "cdktf")
    deploy = [cdktf, "deploy", "--skip-synth", "--output", str(tmp_path / "out"), "--auto-approve"]
    assert runner.calls == [([*deploy, *stacks], ready)]


def test_a_failed_deploy_is_a_runtime_error(ready: Path, tmp_path: Path) -> None:
    runner, synth = Recorder(status=1), Recorder(stacks=("s",))
    with pytest.raises(FleetRuntimeError, match="preview down --branch feature/x"):
        preview_up(
            tmp_path / "f.yaml",
            example_fleet(),
            "feature/x",
            "a",
            tmp_path / "out",
            runner.run,
            repo_root=ready,
            synth=synth.synth,
        )
    assert "--auto-approve" not in runner.calls[0][0]  # without yes, Terraform asks


# ---------------------------------------------------------------------------------------------------
# Inventory: EKS through moto


def preview_tags(
    fleet: Fleet, branch: str, expires_at: int, owner: str = "alice", base: str = "prod"
) -> dict[str, str]:
    preview = Preview(branch=branch, owner=owner, ttl_hours=fleet.previews.ttl_hours, expires_at=expires_at)
    return StackContext(fleet, preview_environment(branch), preview, base_environment=base).tags()


def eks_name(fleet: Fleet, environment: str) -> str:
    return StackContext(fleet, environment).cluster_name("aws-use1", 100)


class MotoEks:
    """moto's EKS in us-east-1: create tagged clusters, and a cdktf runner whose destroy removes them."""

    def __init__(self) -> None:
        import boto3

        self.client = boto3.client("eks", region_name="us-east-1")
        self.clients: CloudClients = {"aws": lambda region: boto3.client("eks", region_name=region)}

    def create(self, name: str, tags: dict[str, str]) -> None:
        role = "arn:aws:iam::123456789012:role/eks"
        self.client.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": []}, tags=tags)

    def destroying_runner(self, environments: dict[str, list[str]]) -> Callable[[list[str], Path], int]:
        """cdktf destroy of a stack removes the clusters of its preview (environment -> cluster names)."""

        def run(cmd: list[str], cwd: Path) -> int:
            outdir = Path(cmd[cmd.index("--output") + 1])
            for name in environments.get(outdir.name, []):
                self.client.delete_cluster(name=name)
            return 0

        return run

    def lister(self) -> Callable[[Fleet], inventory.Inventory]:
        return lambda fleet: list_previews(fleet, self.clients, clouds=["aws"])


@pytest.fixture
def moto_eks(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoEks]:
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield MotoEks()


@pytest.fixture
def aws(moto_eks: MotoEks) -> CloudClients:
    """Two expired previews, one live one, a prod cluster and one with broken tags."""
    fleet = example_fleet()
    for branch, expires_at in [
        ("feature/old", NOW - 8 * HOUR),
        ("fix/older", NOW - 30 * HOUR),
        ("feature/live", NOW + 10 * HOUR),
    ]:
        moto_eks.create(eks_name(fleet, preview_environment(branch)), preview_tags(fleet, branch, expires_at))
    moto_eks.create(eks_name(fleet, "prod"), StackContext(fleet).tags())
    broken = preview_tags(fleet, "feature/broken", NOW) | {"gpufleet-expires-at": "soon"}
    moto_eks.create("broken", broken)
    return moto_eks.clients


def test_aws_inventory_finds_previews_by_tag(aws: CloudClients) -> None:
    found = list_previews(example_fleet(), aws, clouds=["aws"])
    assert sorted(r.environment for r in found.records) == sorted(
        preview_environment(b) for b in ("feature/old", "fix/older", "feature/live")
    )
    old = next(r for r in found.records if r.environment == preview_environment("feature/old"))
    assert old.cloud == "aws" and old.region == "us-east-1" and old.fleet == "demo"
    assert old.branch == "feature-old" and old.owner == "alice" and old.ttl_hours == 72
    assert old.base_environment == "prod"
    assert old.created_at == NOW - 80 * HOUR
    assert old.resource_id.startswith("arn:aws:eks:us-east-1:")
    assert len(found.notes) == 1 and "broken" in found.notes[0] and "gpufleet-expires-at" in found.notes[0]


def test_owner_is_read_from_the_fleets_owner_tag() -> None:
    fleet = example_fleet(owner_tag="team-owner")
    tags = preview_tags(fleet, "feature/x", NOW) | {"team-owner": "carol"}
    found = inventory.record_from_tags(
        tags, cloud="aws", region="r", cluster_name="c", resource_id="c", owner_tag=fleet.previews.owner_tag
    )
    assert isinstance(found, PreviewRecord) and found.owner == "carol"
    # Without that tag (a preview made before the key changed): the gpufleet-owner tag.
    tags = {k: v for k, v in tags.items() if k != "team-owner"} | {TAG_OWNER: "alice"}
    found = inventory.record_from_tags(
        tags, cloud="aws", region="r", cluster_name="c", resource_id="c", owner_tag="team-owner"
    )
    assert isinstance(found, PreviewRecord) and found.owner == "alice"


def test_aws_inventory_uses_the_fleets_owner_tag(moto_eks: MotoEks) -> None:
    fleet = example_fleet(owner_tag="team-owner")
    tags = preview_tags(fleet, "feature/x", NOW) | {"team-owner": "dave"}
    moto_eks.create(eks_name(fleet, preview_environment("feature/x")), tags)
    [record] = list_previews(fleet, moto_eks.clients, clouds=["aws"]).records
    assert record.owner == "dave"


def test_grouping_age_ttl_and_cost_so_far_from_an_estimate(aws: CloudClients, tmp_path: Path) -> None:
    fleet = example_fleet()
    # An estimate of a preview synthesized for another environment: matched by the fleet.yaml cluster.
    sizing_env = preview_environment("sizing")
    node_group = gpu_nodes_stack(2)["resource"]["aws_eks_node_group"]
    cluster = {"name": eks_name(fleet, sizing_env), "tags": {"gpufleet-environment": sizing_env}}
    stack = {"resource": {"aws_eks_cluster": {"c": cluster}, "aws_eks_node_group": node_group}}
    estimate = estimate_from_synth(write_synth(tmp_path, {"s": stack}))
    hourly = EKS_STANDARD + 2 * G5_XLARGE
    summaries = group_previews(
        list_previews(fleet, aws, clouds=["aws"]).records, now=NOW, fleet=fleet, estimate=estimate
    )
    assert [s.environment for s in summaries] == [
        preview_environment(b) for b in ("fix/older", "feature/old", "feature/live")
    ]
    older, old, live = summaries
    assert old.age_hours == pytest.approx(80) and old.ttl_left_hours == pytest.approx(-8)
    assert live.age_hours == pytest.approx(62) and live.ttl_left_hours == pytest.approx(10)
    assert old.usd_per_hour == pytest.approx(hourly)
    assert old.cost_so_far_usd == pytest.approx(hourly * 80)
    assert older.cost_so_far_usd == pytest.approx(hourly * (72 + 30))
    assert old.clouds == ("aws",) and old.expired(NOW) and not live.expired(NOW)
    # Without an estimate the cost is unknown, never $0.
    [unknown, *_] = group_previews(list_previews(fleet, aws, clouds=["aws"]).records, now=NOW, fleet=fleet)
    assert unknown.usd_per_hour is None and unknown.cost_so_far_usd is None


def summaries_of(clients: CloudClients) -> list[inventory.PreviewSummary]:
    fleet = example_fleet()
    return group_previews(list_previews(fleet, clients, clouds=["aws"]).records, now=NOW, fleet=fleet)


def test_sweep_destroys_only_expired_previews_once_confirmed(aws: CloudClients) -> None:
    summaries = summaries_of(aws)
    destroyed: list[str] = []
    asked: list[list[str]] = []

    def confirm(previews: list[inventory.PreviewSummary]) -> bool:
        asked.append([p.environment for p in previews])
        return True

    outcome = sweep(summaries, NOW, lambda s: destroyed.append(s.environment), confirm=confirm)
    expired = [preview_environment(b) for b in ("fix/older", "feature/old")]
    assert asked == [expired]  # asked once, about exactly what it then destroyed
    assert destroyed == expired and [s.environment for s in outcome.destroyed] == expired
    assert not outcome.declined


def test_sweep_destroys_nothing_unconfirmed(aws: CloudClients) -> None:
    summaries = summaries_of(aws)
    destroyed: list[str] = []
    outcome = sweep(summaries, NOW, lambda s: destroyed.append(s.environment), confirm=lambda _: False)
    assert destroyed == [] and outcome.declined and outcome.destroyed == ()
    assert len(outcome.expired) == 2

    def never(previews: list[inventory.PreviewSummary]) -> bool:
        raise AssertionError("a dry run asks nothing")

    would = sweep(summaries, NOW, lambda s: destroyed.append(s.environment), confirm=never, dry_run=True)
    assert destroyed == [] and [s.environment for s in would.expired] == [
        preview_environment(b) for b in ("fix/older", "feature/old")
    ]


def test_sweep_tries_every_expired_preview_and_reports_failures(aws: CloudClients) -> None:
    attempted: list[str] = []

    def destroy(summary: inventory.PreviewSummary) -> None:
        attempted.append(summary.environment)
        raise FleetRuntimeError("cdktf destroy failed (exit 1)")

    with pytest.raises(FleetRuntimeError, match="destroyed 0 of 2 expired previews"):
        sweep(summaries_of(aws), NOW, destroy, confirm=lambda _: True)
    assert len(attempted) == 2


def test_aws_without_credentials_is_a_user_error(bare_machine: Path) -> None:
    import boto3

    clients: CloudClients = {"aws": lambda region: boto3.session.Session().client("eks", region_name=region)}
    with pytest.raises(UserError) as raised:
        list_previews(example_fleet(), clients, clouds=["aws"])
    assert str(raised.value) == aws_cloud.AWS_NO_CREDENTIALS


# ---------------------------------------------------------------------------------------------------
# Down and sweep destroy what the tags say, in the state the tags name, and check it is gone


def test_sweep_destroys_in_the_base_environment_of_the_previews_own_tags(
    moto_eks: MotoEks, ready: Path, tmp_path: Path
) -> None:
    fleet = example_fleet()
    env = preview_environment("feature/staged")
    cluster = eks_name(fleet, env)
    # Made with `preview up --env staging`: its state lives in staging's bucket.
    moto_eks.create(cluster, preview_tags(fleet, "feature/staged", NOW - HOUR, base="staging"))
    synth = Recorder(stacks=(f"{env}-aws-use1",))
    destroy = preview_destroyer(
        tmp_path / "f.yaml",
        fleet,
        tmp_path / "out",
        moto_eks.destroying_runner({env: [cluster]}),
        lister=moto_eks.lister(),
        repo_root=ready,
        synth=synth.synth_target,
    )
    outcome = sweep(summaries_of(moto_eks.clients), NOW, destroy, confirm=lambda _: True)
    assert [s.environment for s in outcome.destroyed] == [env]
    [(clouds, _, target, outdir)] = synth.calls
    assert target.base_environment == "staging" and target.environment == env
    assert outdir == tmp_path / "out" / env
    assert moto_eks.client.list_clusters()["clusters"] == []


def test_the_target_synth_points_at_the_base_environments_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[SynthOptions] = []
    monkeypatch.setattr(preview_synth, "synth_fleet", lambda clouds, options, out: seen.append(options) or {})
    target = PreviewTarget("pv-x-123456", "x", "o", NOW, 72, base_environment="staging")
    preview_synth.synth_preview_target(["aws"], tmp_path / "f.yaml", target, tmp_path / "out")
    # `python -m stacks --env` is the base environment: its state bucket, its store.
    assert [(o.environment, o.preview_environment) for o in seen] == [("staging", "pv-x-123456")]


def test_a_preview_without_its_base_environment_tag_is_refused(
    moto_eks: MotoEks, ready: Path, tmp_path: Path
) -> None:
    fleet = example_fleet()
    tags = preview_tags(fleet, "feature/old-tags", NOW - HOUR)
    del tags[TAG_BASE_ENVIRONMENT]  # made by a gpufleet that did not write it
    moto_eks.create(eks_name(fleet, preview_environment("feature/old-tags")), tags)
    runner, synth = Recorder(), Recorder(stacks=("s",))
    with pytest.raises(UserError) as raised:
        preview_down(
            tmp_path / "f.yaml",
            fleet,
            "feature/old-tags",
            tmp_path / "out",
            runner.run,
            lister=moto_eks.lister(),
            repo_root=ready,
            synth=synth.synth_target,
        )
    message = str(raised.value)
    assert TAG_BASE_ENVIRONMENT in message and "\n" not in message
    assert runner.calls == [] and synth.calls == []


def test_down_fails_when_the_destroyed_preview_is_still_there(
    moto_eks: MotoEks, ready: Path, tmp_path: Path
) -> None:
    fleet = example_fleet()
    env = preview_environment("feature/stuck")
    cluster = eks_name(fleet, env)
    moto_eks.create(cluster, preview_tags(fleet, "feature/stuck", NOW - HOUR, base="staging"))
    exits_zero_destroys_nothing = Recorder(status=0)
    with pytest.raises(FleetRuntimeError) as raised:
        preview_down(
            tmp_path / "f.yaml",
            fleet,
            "feature/stuck",
            tmp_path / "out",
            exits_zero_destroys_nothing.run,
            yes=True,
            lister=moto_eks.lister(),
            repo_root=ready,
            synth=Recorder(stacks=("s",)).synth_target,
        )
    assert cluster in str(raised.value) and "still" in str(raised.value)
    assert len(exits_zero_destroys_nothing.calls) == 1  # it did run the destroy


def test_down_destroys_by_the_tags_and_verifies(moto_eks: MotoEks, ready: Path, tmp_path: Path) -> None:
    fleet = example_fleet()
    env = preview_environment("feature/done")
    cluster = eks_name(fleet, env)
    moto_eks.create(cluster, preview_tags(fleet, "feature/done", NOW - HOUR, base="staging"))
    synth = Recorder(stacks=("a", "b"))
    result = preview_down(
        tmp_path / "f.yaml",
        fleet,
        "feature/done",
        tmp_path / "out" / env,
        moto_eks.destroying_runner({env: [cluster]}),
        yes=True,
        lister=moto_eks.lister(),
        repo_root=ready,
        synth=synth.synth_target,
    )
    [(_, _, target, _)] = synth.calls
    assert target.base_environment == "staging"
    assert result.action == "destroy" and result.stacks == ("a", "b")
    assert list(result.command[1:]) == [
        "destroy",
        "--skip-synth",
        "--output",
        str(tmp_path / "out" / env),
        "--auto-approve",
        "a",
        "b",
    ]


def test_what_the_check_could_not_look_at_is_reported_not_taken_as_gone(
    moto_eks: MotoEks, ready: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARM_USE_MSI", "true")  # a managed identity: the AKS lister cannot look
    fleet = example_fleet()
    env = preview_environment("feature/azure-too")
    cluster = eks_name(fleet, env)
    moto_eks.create(cluster, preview_tags(fleet, "feature/azure-too", NOW - HOUR))
    result = preview_down(
        tmp_path / "f.yaml",
        fleet,
        "feature/azure-too",
        tmp_path / "out" / env,
        moto_eks.destroying_runner({env: [cluster]}),
        yes=True,
        lister=lambda fleet: list_previews(fleet, moto_eks.clients, clouds=["aws", "azure"]),
        repo_root=ready,
        synth=Recorder(stacks=("a",)).synth_target,
    )
    assert result.unverified == (azure.AZURE_NOT_LISTED.format(how="a managed identity"),)


def test_down_of_a_preview_not_found_is_a_user_error(moto_eks: MotoEks, ready: Path, tmp_path: Path) -> None:
    runner = Recorder()
    with pytest.raises(UserError, match="no cluster of preview .* found by its tags.*--env") as raised:
        preview_down(
            tmp_path / "f.yaml",
            example_fleet(),
            "feature/none",
            tmp_path / "out",
            runner.run,
            lister=moto_eks.lister(),
            repo_root=ready,
            synth=Recorder(stacks=("s",)).synth_target,
        )
    assert "\n" not in str(raised.value) and runner.calls == []


def test_down_without_a_cluster_destroys_in_the_environment_named_explicitly(
    moto_eks: MotoEks, ready: Path, tmp_path: Path
) -> None:
    # A `preview up` that failed before its cluster existed left a network behind: no tags to read.
    runner, synth = Recorder(), Recorder(stacks=("s",))
    result = preview_down(
        tmp_path / "f.yaml",
        example_fleet(),
        "feature/half-made",
        tmp_path / "out",
        runner.run,
        base_environment="staging",
        lister=moto_eks.lister(),
        repo_root=ready,
        synth=synth.synth_target,
    )
    [(_, _, target, _)] = synth.calls
    assert (target.environment, target.base_environment) == (
        preview_environment("feature/half-made"),
        "staging",
    )
    assert result.action == "destroy" and len(runner.calls) == 1


def test_down_refuses_an_env_that_contradicts_the_tags(
    moto_eks: MotoEks, ready: Path, tmp_path: Path
) -> None:
    fleet = example_fleet()
    env = preview_environment("feature/tagged")
    moto_eks.create(eks_name(fleet, env), preview_tags(fleet, "feature/tagged", NOW - HOUR, base="staging"))
    runner = Recorder()
    with pytest.raises(UserError, match="made with --env staging"):
        preview_down(
            tmp_path / "f.yaml",
            fleet,
            "feature/tagged",
            tmp_path / "out",
            runner.run,
            base_environment="prod",
            lister=moto_eks.lister(),
            repo_root=ready,
            synth=Recorder(stacks=("s",)).synth_target,
        )
    assert runner.calls == []


# ---------------------------------------------------------------------------------------------------
# Inventory: GKE through the real client library, over gRPC to an in-process fake server


class FakeClusterManager:
    """Answers google.container.v1.ClusterManager/ListClusters with prepared clusters."""

    def __init__(self) -> None:
        self.clusters: dict[str, list[Any]] = {}
        self.requests: list[str] = []
        self.deny = False

    def list_clusters(self, request: Any, context: Any) -> Any:
        import grpc
        from google.cloud.container_v1 import ListClustersResponse

        self.requests.append(request.parent)
        if self.deny:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "container.clusters.list denied")
        project = request.parent.split("/")[1]
        return ListClustersResponse(clusters=self.clusters.get(project, []), missing_zones=["us-central1-f"])


@pytest.fixture
def gke() -> Iterator[tuple[CloudClients, FakeClusterManager]]:
    pytest.importorskip("google.cloud.container_v1")
    import grpc
    from google.cloud.container_v1 import ClusterManagerClient, ListClustersRequest, ListClustersResponse
    from google.cloud.container_v1.services.cluster_manager.transports import ClusterManagerGrpcTransport

    fake = FakeClusterManager()
    handler = grpc.method_handlers_generic_handler(
        "google.container.v1.ClusterManager",
        {
            "ListClusters": grpc.unary_unary_rpc_method_handler(
                fake.list_clusters,
                request_deserializer=ListClustersRequest.deserialize,
                response_serializer=ListClustersResponse.serialize,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = ClusterManagerClient(transport=ClusterManagerGrpcTransport(channel=channel))
    try:
        yield {"gcp": lambda: client}, fake
    finally:
        channel.close()
        server.stop(0)


def test_gcp_inventory_reads_resource_labels(gke: tuple[CloudClients, FakeClusterManager]) -> None:
    from google.cloud.container_v1 import Cluster

    clients, fake = gke
    fleet = example_fleet()
    env = preview_environment("feature/old")
    gke_name = StackContext(fleet, env).cluster_name("gke-usc1", 40)
    fake.clusters["gpufleet-demo"] = [
        Cluster(
            name=gke_name,
            location="us-central1",
            self_link=f"https://container.googleapis.com/v1/projects/gpufleet-demo/locations/us-central1/clusters/{gke_name}",
            resource_labels=preview_tags(fleet, "feature/old", NOW - 8 * HOUR, base="staging"),
        ),
        Cluster(name="gke-usc1-prod", location="us-central1", resource_labels=StackContext(fleet).tags()),
    ]
    found = list_previews(fleet, clients, clouds=["gcp"])
    assert fake.requests == ["projects/gpufleet-demo/locations/-"]
    [record] = found.records
    assert (record.environment, record.cloud, record.region, record.cluster_name) == (
        env,
        "gcp",
        "us-central1",
        gke_name,
    )
    assert record.base_environment == "staging"
    assert record.expires_at == NOW - 8 * HOUR and record.resource_id.endswith(f"/clusters/{gke_name}")
    assert found.notes == (
        "gcp: project gpufleet-demo: zones did not answer, their clusters are not listed: us-central1-f",
    )


def test_gcp_permission_denied_is_a_user_error(gke: tuple[CloudClients, FakeClusterManager]) -> None:
    clients, fake = gke
    fake.deny = True
    with pytest.raises(UserError, match="cannot list GKE clusters in project gpufleet-demo"):
        list_previews(example_fleet(), clients, clouds=["gcp"])


# ---------------------------------------------------------------------------------------------------
# One environment across clouds; destroying by environment name


def record(cloud: str, cluster: str, created_hours_ago: float, fleet_name: str = "demo") -> PreviewRecord:
    environment = preview_environment("feature/multi")
    name = fit_name(cluster, environment, max_length=naming.CLUSTER_NAME_MAX_LENGTH[cloud])
    return PreviewRecord(
        environment=environment,
        fleet=fleet_name,
        branch="feature-multi",
        owner="bob",
        cloud=cloud,
        region={"aws": "us-east-1", "gcp": "us-central1"}[cloud],
        cluster_name=name,
        expires_at=int(NOW - created_hours_ago * HOUR + 72 * HOUR),
        ttl_hours=72,
        resource_id=name,
        base_environment="prod",
    )


def test_one_environment_on_two_clouds_is_one_preview() -> None:
    records = [record("gcp", "gke-usc1", 2), record("aws", "aws-use1", 3)]
    [summary] = group_previews(records, now=NOW, fleet=example_fleet())
    assert summary.clouds == ("aws", "gcp")
    assert summary.age_hours == pytest.approx(3)  # since the first cluster
    assert summary.ttl_left_hours == pytest.approx(70)  # until the last cluster expires


def test_clusters_naming_different_base_environments_are_refused() -> None:
    records = [
        record("gcp", "gke-usc1", 2),
        replace(record("aws", "aws-use1", 3), base_environment="staging"),
    ]
    [summary] = group_previews(records, now=NOW, fleet=example_fleet())
    with pytest.raises(UserError, match="different gpufleet-base-environment"):
        lifecycle.preview_target(summary)


def test_sweep_rebuilds_the_same_context_from_tags() -> None:
    fleet = example_fleet()
    tags = preview_tags(fleet, "Feature/Ünïcode_branch", NOW - HOUR, owner="Carol", base="staging")
    found = inventory.record_from_tags(
        tags, cloud="aws", region="us-east-1", cluster_name="c", resource_id="c"
    )
    assert isinstance(found, PreviewRecord)
    [summary] = group_previews([found], now=NOW, fleet=fleet)
    ctx = preview_stack_context(fleet, lifecycle.preview_target(summary))
    assert ctx.environment == preview_environment("Feature/Ünïcode_branch")
    assert ctx.tags() == tags  # same tags, so a destroy plan shows no tag drift
    assert ctx.base_environment == "staging"
    assert ctx.state_key("s") == f"previews/{ctx.environment}/s.tfstate"


def test_destroyer_refuses_another_fleets_preview(ready: Path, tmp_path: Path) -> None:
    runner, synth = Recorder(), Recorder(stacks=("a",))
    destroy = preview_destroyer(
        tmp_path / "f.yaml",
        example_fleet(),
        tmp_path / "out",
        runner.run,
        repo_root=ready,
        synth=synth.synth_target,
        lister=lambda fleet: inventory.Inventory(()),
    )
    [other] = group_previews([record("aws", "aws-use1", 100, fleet_name="other")], now=NOW)
    with pytest.raises(UserError, match="belongs to fleet other"):
        destroy(other)
    assert runner.calls == [] and synth.calls == []


def test_only_preview_environments_can_be_named_for_destroy() -> None:
    target = PreviewTarget(
        environment="prod", branch="x", owner="o", expires_at=NOW, ttl_hours=72, base_environment="prod"
    )
    with pytest.raises(UserError, match="not a preview"):
        preview_stack_context(example_fleet(), target)
