"""Bring a branch's preview up and down, and sweep expired previews.

Order of `preview_up`: name, estimate, cost cap, preflight, synth, deploy. Everything that can refuse
runs before anything is written or created, so a refused preview leaves no trace.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpufleet.environments import DEFAULT_ENVIRONMENT, preview_environment
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import Fleet
from pipelines.previews.inventory import AWS_NO_CREDENTIALS, GCP_NO_CREDENTIALS, PreviewSummary
from pipelines.previews.pricing import CostEstimate, estimate_preview
from pipelines.previews.synth import PreviewTarget, synth_preview_target
from stacks.synth import CLOUD_ORDER, SynthOptions, synth_fleet

REPO_ROOT = Path(__file__).resolve().parents[2]  # holds cdktf.json and node_modules/.bin/cdktf
SECONDS_PER_HOUR = 3600

Runner = Callable[[list[str], Path], int]  # (command, cwd) -> exit status
Synth = Callable[[list[str], SynthOptions, Path], dict[str, object]]  # stacks.synth.synth_fleet
TargetSynth = Callable[[list[str], Path, PreviewTarget, Path], dict[str, object]]
Which = Callable[[str], str | None]

TERRAFORM_MISSING = (
    "terraform not found on PATH; install Terraform >= 1.5 "
    "(https://developer.hashicorp.com/terraform/install) and put it on PATH"
)
CDKTF_MISSING = (
    "cdktf CLI not found (no node_modules/.bin/cdktf in {root} and no cdktf on PATH); "
    "run `make setup-all` (npm install) in the repository root"
)
CDKTF_PYTHON_MISSING = (
    "the cloud layer is not installed (no cdktf Python package); "
    "run `make setup-all` or pip install -e '.[cloud]'"
)
GCP_AUTH_MISSING = (
    "gcp: google-auth is not installed; install the cloud layer with "
    "`make setup-all` or pip install -e '.[cloud]'"
)
AZURE_NO_CREDENTIALS = (
    "azure: no credentials found (set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and "
    "ARM_SUBSCRIPTION_ID for a service principal, ARM_USE_MSI=true for a managed identity, "
    "ARM_USE_OIDC=true in CI, or install the Azure CLI and run `az login`)"
)
AZURE_NO_SUBSCRIPTION = (
    "azure: ARM_SUBSCRIPTION_ID is not set and the azurerm 4.x provider requires it; "
    "export ARM_SUBSCRIPTION_ID (e.g. $(az account show --query id -o tsv))"
)
# Any of these tells the azurerm provider how to authenticate without the Azure CLI.
AZURE_CREDENTIAL_ENV = ("ARM_CLIENT_ID", "ARM_USE_MSI", "ARM_USE_OIDC", "ARM_USE_CLI")


def run_command(cmd: list[str], cwd: Path) -> int:
    """The default runner: inherits the terminal, so cdktf's progress and prompts reach the user."""
    try:
        return subprocess.run(cmd, cwd=cwd, check=False).returncode
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} not found; run `make setup-all` (npm install) in {cwd}") from None


# ---------------------------------------------------------------------------------------------------
# Preflight


def cdktf_command(repo_root: Path = REPO_ROOT, which: Which = shutil.which) -> str | None:
    """The cdktf CLI: the repo's pinned copy (package.json) first, else one on PATH."""
    local = repo_root / "node_modules" / ".bin" / "cdktf"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return which("cdktf")


def _aws_credentials_problem() -> str | None:
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        found = boto3.Session().get_credentials()
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
        return f"aws: cannot read credentials ({exc}); fix AWS_PROFILE or ~/.aws/config"
    return AWS_NO_CREDENTIALS if found is None else None


def _gcp_credentials_problem() -> str | None:
    if importlib.util.find_spec("google.auth") is None:
        return GCP_AUTH_MISSING
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        return GCP_NO_CREDENTIALS
    return None


def _azure_credentials_problem(environ: Mapping[str, str], which: Which) -> str | None:
    if not any(environ.get(name) for name in AZURE_CREDENTIAL_ENV) and which("az") is None:
        return AZURE_NO_CREDENTIALS
    if not environ.get("ARM_SUBSCRIPTION_ID"):
        return AZURE_NO_SUBSCRIPTION
    return None


def preflight(
    fleet: Fleet,
    clouds: Sequence[str],
    *,
    repo_root: Path = REPO_ROOT,
    environ: Mapping[str, str] | None = None,
    which: Which = shutil.which,
) -> list[str]:
    """What is missing to deploy or destroy the fleet's stacks on `clouds`: one line per problem,
    each naming the missing thing and how to get it. [] when ready."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    if which("terraform") is None:
        problems.append(TERRAFORM_MISSING)
    if cdktf_command(repo_root, which) is None:
        problems.append(CDKTF_MISSING.format(root=repo_root))
    if importlib.util.find_spec("cdktf") is None:
        problems.append(CDKTF_PYTHON_MISSING)
    checks: dict[str, Callable[[], str | None]] = {
        "aws": _aws_credentials_problem,
        "gcp": _gcp_credentials_problem,
        "azure": lambda: _azure_credentials_problem(environ, which),
    }
    for cloud in CLOUD_ORDER:
        if cloud in clouds:
            problem = checks[cloud]()
            if problem:
                problems.append(problem)
    return problems


def _require_ready(fleet: Fleet, clouds: list[str], repo_root: Path) -> str:
    problems = preflight(fleet, clouds, repo_root=repo_root)
    if problems:
        raise UserError("; ".join(problems))
    command = cdktf_command(repo_root)
    assert command is not None  # preflight reported it otherwise
    return command


# ---------------------------------------------------------------------------------------------------
# Up and down


@dataclass(frozen=True)
class PreviewResult:
    environment: str
    action: Literal["deploy", "destroy"]
    stacks: tuple[str, ...]
    estimate: CostEstimate
    command: tuple[str, ...]
    expires_at: int | None = None  # deploy only


def fleet_clouds(fleet: Fleet) -> list[str]:
    clouds = [c for c in CLOUD_ORDER if c in fleet.clouds()]
    if not clouds:
        raise UserError("clusters: no aws, gcp or azure cluster; a preview needs at least one cloud cluster")
    return clouds


def check_cost_cap(fleet: Fleet, estimate: CostEstimate) -> None:
    cap = fleet.previews.cost_cap_usd_per_day
    if estimate.usd_per_day > cap:
        raise UserError(
            f"a preview of fleet {fleet.name} would cost up to ${estimate.usd_per_day:.2f}/day "
            f"(${estimate.usd_per_hour:.4f}/h, every GPU pool at 1 node all day), above "
            f"previews.cost_cap_usd_per_day ({cap:g}); raise previews.cost_cap_usd_per_day in the fleet "
            "file, set previews.spot: true, or use smaller instance types"
        )


def preview_expiry(fleet: Fleet, now: float) -> int:
    # Rounded to the hour as Preview.starting_now does: two synths within the hour are identical.
    return int(now) // SECONDS_PER_HOUR * SECONDS_PER_HOUR + fleet.previews.ttl_hours * SECONDS_PER_HOUR


def _stack_names(manifest: dict[str, object]) -> tuple[str, ...]:
    stacks = manifest.get("stacks")
    if not isinstance(stacks, dict) or not stacks:
        raise FleetRuntimeError("the synth produced no stacks; check `python -m stacks` output")
    return tuple(str(name) for name in stacks)


def _cdktf(
    action: Literal["deploy", "destroy"],
    fleet: Fleet,
    clouds: list[str],
    synthesize: Callable[[list[str]], dict[str, object]],
    *,
    environment: str,
    outdir: Path,
    runner: Runner,
    yes: bool,
    repo_root: Path,
    after_failure: str,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Preflight, synthesize the preview's stacks into outdir, run cdktf `action` on them.

    Returns the stacks and the cdktf command line.
    """
    command = _require_ready(fleet, clouds, repo_root)
    stacks = _stack_names(synthesize(clouds))
    # --skip-synth: the stacks were synthesized above with the preview's options; letting cdktf run
    # the app again (cdktf.json) would synthesize prod's.
    cmd = [command, action, "--skip-synth", "--output", str(outdir)]
    cmd += ["--auto-approve"] if yes else []
    cmd += list(stacks)
    status = runner(cmd, repo_root)
    if status != 0:
        raise FleetRuntimeError(
            f"cdktf {action} of preview {environment} failed (exit {status}); {after_failure}"
        )
    return stacks, tuple(cmd)


def preview_up(
    fleet_file: Path,
    fleet: Fleet,
    branch: str,
    owner: str,
    outdir: Path,
    runner: Runner = run_command,
    yes: bool = False,
    *,
    base_environment: str = DEFAULT_ENVIRONMENT,
    now: float | None = None,
    repo_root: Path = REPO_ROOT,
    synth: Synth = synth_fleet,
) -> PreviewResult:
    """Deploy the branch's preview: every cloud cluster of the fleet, GPU pools 0..1 node.

    yes=False leaves out --auto-approve, so Terraform shows each plan and asks (the default runner
    inherits the terminal); CI passes yes=True.
    """
    environment = preview_environment(branch)
    clouds = fleet_clouds(fleet)
    estimate = estimate_preview(fleet)
    check_cost_cap(fleet, estimate)
    expires_at = preview_expiry(fleet, time.time() if now is None else now)
    options = SynthOptions(fleet_file, base_environment, branch=branch, owner=owner, expires_at=expires_at)
    stacks, cmd = _cdktf(
        "deploy",
        fleet,
        clouds,
        lambda clouds: synth(clouds, options, outdir),
        environment=environment,
        outdir=outdir,
        runner=runner,
        yes=yes,
        repo_root=repo_root,
        after_failure="fix the error above and rerun, or remove what was created with "
        f"`gpufleet preview down --branch {branch}`",
    )
    return PreviewResult(environment, "deploy", stacks, estimate, cmd, expires_at)


def _destroy(
    fleet: Fleet,
    environment: str,
    synthesize: Callable[[list[str]], dict[str, object]],
    outdir: Path,
    runner: Runner,
    yes: bool,
    repo_root: Path,
    after_failure: str,
) -> PreviewResult:
    """Destroy a preview's stacks (every cloud of the fleet)."""
    stacks, cmd = _cdktf(
        "destroy",
        fleet,
        fleet_clouds(fleet),
        synthesize,
        environment=environment,
        outdir=outdir,
        runner=runner,
        yes=yes,
        repo_root=repo_root,
        after_failure=after_failure,
    )
    return PreviewResult(environment, "destroy", stacks, estimate_preview(fleet), cmd)


def preview_down(
    fleet_file: Path,
    fleet: Fleet,
    branch: str,
    owner: str,
    outdir: Path,
    runner: Runner = run_command,
    yes: bool = False,
    *,
    base_environment: str = DEFAULT_ENVIRONMENT,
    repo_root: Path = REPO_ROOT,
    synth: Synth = synth_fleet,
) -> PreviewResult:
    """Destroy the branch's preview (all of its stacks, every cloud of the fleet)."""
    environment = preview_environment(branch)
    options = SynthOptions(fleet_file, base_environment, branch=branch, owner=owner)
    return _destroy(
        fleet,
        environment,
        lambda clouds: synth(clouds, options, outdir),
        outdir,
        runner,
        yes,
        repo_root,
        after_failure="fix the error above and rerun",
    )


def preview_target(summary: PreviewSummary, base_environment: str = DEFAULT_ENVIRONMENT) -> PreviewTarget:
    """What the sweep knows of a preview, from its tags: the environment name is authoritative."""
    ttl_hours = max(r.ttl_hours for r in summary.records)
    return PreviewTarget(
        environment=summary.environment,
        branch=summary.branch,
        owner=summary.owner,
        expires_at=summary.expires_at,
        ttl_hours=ttl_hours,
        base_environment=base_environment,
    )


def destroy_preview_target(
    fleet_file: Path,
    fleet: Fleet,
    target: PreviewTarget,
    outdir: Path,
    runner: Runner = run_command,
    yes: bool = False,
    *,
    repo_root: Path = REPO_ROOT,
    synth: TargetSynth = synth_preview_target,
) -> PreviewResult:
    """Destroy a preview known by its environment name (e.g. found by the sweep)."""
    return _destroy(
        fleet,
        target.environment,
        lambda clouds: synth(clouds, fleet_file, target, outdir),
        outdir,
        runner,
        yes,
        repo_root,
        after_failure="fix the error above and rerun the sweep",
    )


def preview_destroyer(
    fleet_file: Path,
    fleet: Fleet,
    outdir_root: Path,
    runner: Runner = run_command,
    *,
    base_environment: str = DEFAULT_ENVIRONMENT,
    repo_root: Path = REPO_ROOT,
    synth: TargetSynth = synth_preview_target,
) -> Callable[[PreviewSummary], None]:
    """The `destroy` callable for sweep(): one preview at a time, each in outdir_root/<environment>.

    Refuses another fleet's previews: their stacks come from a fleet file this one is not.
    """

    def destroy(summary: PreviewSummary) -> None:
        if summary.fleet != fleet.name:
            raise UserError(
                f"preview {summary.environment} belongs to fleet {summary.fleet}, not {fleet.name}; "
                f"sweep it with that fleet's file"
            )
        target = preview_target(summary, base_environment)
        destroy_preview_target(
            fleet_file,
            fleet,
            target,
            outdir_root / summary.environment,
            runner,
            yes=True,  # a sweep runs unattended; what it destroys is decided by expiry alone
            repo_root=repo_root,
            synth=synth,
        )

    return destroy


# ---------------------------------------------------------------------------------------------------
# Sweep


def sweep(
    previews: Sequence[PreviewSummary],
    now: float,
    destroy: Callable[[PreviewSummary], None],
    dry_run: bool = False,
) -> list[PreviewSummary]:
    """Destroy the previews that have expired (expires_at < now); the live ones are never touched.

    Returns the expired previews (destroyed, or that would be in a dry run). One failure does not stop
    the others; the failures are raised together afterwards.
    """
    expired = [p for p in previews if p.expires_at < now]
    if dry_run:
        return expired
    failures: list[str] = []
    for preview in expired:
        try:
            destroy(preview)
        except (UserError, FleetRuntimeError) as exc:
            failures.append(f"{preview.environment}: {exc}")
    if failures:
        destroyed = len(expired) - len(failures)
        raise FleetRuntimeError(
            f"sweep destroyed {destroyed} of {len(expired)} expired previews; " + "; ".join(failures)
        )
    return expired
