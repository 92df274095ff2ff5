"""Bring a branch's preview up and down, and sweep expired previews.

`preview_up`: name, synth, estimate (priced from that synth), cost cap, preflight, deploy. Nothing is
created in a cloud before the estimate has passed the cap, and a refused preview leaves no synth
output behind (unless its folder held an earlier one).

`preview_down` and the sweep destroy a preview as its tags describe it: its base environment (whose
state bucket holds its state) comes from its own gpufleet-base-environment tag, never from a default,
and afterwards the same tag inventory must no longer find it: Terraform exiting 0 is not proof.
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

from gpufleet.clouds import CLOUDS
from gpufleet.environments import DEFAULT_ENVIRONMENT, environment_problem, preview_environment
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import Fleet
from pipelines.previews.inventory import Inventory, PreviewSummary, group_previews, list_previews
from pipelines.previews.pricing import CostEstimate, estimate_from_synth
from pipelines.previews.synth import PreviewTarget, synth_preview_target
from stacks.context import TAG_BASE_ENVIRONMENT
from stacks.synth import SynthOptions, synth_fleet

REPO_ROOT = Path(__file__).resolve().parents[2]  # holds cdktf.json and node_modules/.bin/cdktf
SECONDS_PER_HOUR = 3600

Runner = Callable[[list[str], Path], int]  # (command, cwd) -> exit status
Synth = Callable[[list[str], SynthOptions, Path], dict[str, object]]  # stacks.synth.synth_fleet
TargetSynth = Callable[[list[str], Path, PreviewTarget, Path], dict[str, object]]
Lister = Callable[[Fleet], Inventory]  # inventory.list_previews, or one bound to test clients
Which = Callable[[str], str | None]
Confirm = Callable[[list[PreviewSummary]], bool]  # shown what would be destroyed; True to go ahead

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
    for name, cloud in CLOUDS.items():
        if name in clouds:
            problem = cloud.credentials_problem(environ, which)
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
# Up


@dataclass(frozen=True)
class PreviewResult:
    environment: str
    action: Literal["deploy", "destroy"]
    stacks: tuple[str, ...]
    estimate: CostEstimate  # priced from the stacks deployed or destroyed
    command: tuple[str, ...]
    expires_at: int | None = None  # deploy only
    # destroy only: what the check afterwards could not look at (e.g. a cloud without a lister).
    unverified: tuple[str, ...] = ()


def fleet_clouds(fleet: Fleet) -> list[str]:
    clouds = [c for c in CLOUDS if c in fleet.clouds()]
    if not clouds:
        raise UserError("clusters: no aws, gcp or azure cluster; a preview needs at least one cloud cluster")
    return clouds


def check_cost_cap(fleet: Fleet, estimate: CostEstimate) -> None:
    cap = fleet.previews.cost_cap_usd_per_day
    if estimate.usd_per_day > cap:
        raise UserError(
            f"a preview of fleet {fleet.name} would cost up to ${estimate.usd_per_day:.2f}/day "
            f"(${estimate.usd_per_hour:.4f}/h, every node pool at its maximum all day), above "
            f"previews.cost_cap_usd_per_day ({cap:g}); raise previews.cost_cap_usd_per_day in the fleet "
            "file, set previews.spot: true, lower previews.max_gpu_nodes, or use smaller instance types"
        )


def preview_expiry(fleet: Fleet, now: float) -> int:
    # Rounded to the hour as Preview.starting_now does: two synths within the hour are identical.
    return int(now) // SECONDS_PER_HOUR * SECONDS_PER_HOUR + fleet.previews.ttl_hours * SECONDS_PER_HOUR


def _stack_names(manifest: dict[str, object]) -> tuple[str, ...]:
    stacks = manifest.get("stacks")
    if not isinstance(stacks, dict) or not stacks:
        raise FleetRuntimeError("the synth produced no stacks; check `python -m stacks` output")
    return tuple(str(name) for name in stacks)


def _run_cdktf(
    command: str,
    action: Literal["deploy", "destroy"],
    stacks: tuple[str, ...],
    *,
    environment: str,
    outdir: Path,
    runner: Runner,
    yes: bool,
    repo_root: Path,
    after_failure: str,
) -> tuple[str, ...]:
    # --skip-synth: the stacks were synthesized with the preview's options; letting cdktf run the app
    # again (cdktf.json) would synthesize prod's.
    cmd = [command, action, "--skip-synth", "--output", str(outdir)]
    cmd += ["--auto-approve"] if yes else []
    cmd += list(stacks)
    status = runner(cmd, repo_root)
    if status != 0:
        raise FleetRuntimeError(
            f"cdktf {action} of preview {environment} failed (exit {status}); {after_failure}"
        )
    return tuple(cmd)


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
    show_estimate: Callable[[CostEstimate], None] | None = None,
) -> PreviewResult:
    """Deploy the branch's preview: every cloud cluster of the fleet, sized as the stacks size previews.

    The estimate is priced from the synthesized stacks (shown through show_estimate) and checked
    against previews.cost_cap_usd_per_day before anything is deployed. yes=False leaves out
    --auto-approve, so Terraform shows each plan and asks (the default runner inherits the terminal).
    """
    environment = preview_environment(branch)
    clouds = fleet_clouds(fleet)
    if importlib.util.find_spec("cdktf") is None:  # synth needs it; say so before a subprocess fails
        raise UserError(CDKTF_PYTHON_MISSING)
    expires_at = preview_expiry(fleet, time.time() if now is None else now)
    options = SynthOptions(fleet_file, base_environment, branch=branch, owner=owner, expires_at=expires_at)
    fresh = not outdir.exists()
    stacks = _stack_names(synth(clouds, options, outdir))
    estimate = estimate_from_synth(outdir)
    if show_estimate is not None:
        show_estimate(estimate)
    try:
        check_cost_cap(fleet, estimate)
    except UserError:
        if fresh:  # a refused first preview leaves nothing behind; an earlier synth's folder stays
            shutil.rmtree(outdir, ignore_errors=True)
        raise
    # After the cap: what a preview costs can be learnt without cloud credentials or Terraform.
    command = _require_ready(fleet, clouds, repo_root)
    cmd = _run_cdktf(
        command,
        "deploy",
        stacks,
        environment=environment,
        outdir=outdir,
        runner=runner,
        yes=yes,
        repo_root=repo_root,
        after_failure="fix the error above and rerun, or remove what was created with "
        f"`gpufleet preview down --branch {branch} --env {base_environment}`",
    )
    return PreviewResult(environment, "deploy", stacks, estimate, cmd, expires_at)


# ---------------------------------------------------------------------------------------------------
# Down


def preview_target(summary: PreviewSummary) -> PreviewTarget:
    """What destroying a preview needs, from its tags: the environment name is authoritative, and the
    base environment must be recorded on every one of its clusters, the same on each."""
    missing = [r.describe() for r in summary.records if not r.base_environment]
    if missing:
        raise UserError(
            f"preview {summary.environment}: {', '.join(missing)} has no {TAG_BASE_ENVIRONMENT} tag, so "
            "the environment whose state holds it is unknown and gpufleet will not guess; tag the cluster "
            f"with {TAG_BASE_ENVIRONMENT}=<the --env it was made with, e.g. prod> and rerun"
        )
    bases = sorted({r.base_environment for r in summary.records})
    if len(bases) > 1:
        where = ", ".join(f"{r.describe()}: {r.base_environment}" for r in summary.records)
        raise UserError(
            f"preview {summary.environment}: its clusters name different {TAG_BASE_ENVIRONMENT} tags "
            f"({where}); correct the wrong tag and rerun"
        )
    [base] = bases
    problem = environment_problem(base)
    if problem:
        raise UserError(f"preview {summary.environment}: tag {TAG_BASE_ENVIRONMENT}: {problem}")
    return PreviewTarget(
        environment=summary.environment,
        branch=summary.branch,
        owner=summary.owner,
        expires_at=summary.expires_at,
        ttl_hours=max(r.ttl_hours for r in summary.records),
        base_environment=base,
    )


def verify_destroyed(fleet: Fleet, environment: str, lister: Lister) -> tuple[str, ...]:
    """Raise FleetRuntimeError naming every cluster of the preview the tag inventory still finds.

    Returns what the inventory could not look at (those clouds are unverified, not clean).
    """
    inventory = lister(fleet)
    left = [r for r in inventory.records if r.environment == environment and r.fleet == fleet.name]
    if left:
        raise FleetRuntimeError(
            f"preview {environment}: cdktf destroy finished, but its tags still find "
            f"{', '.join(f'{r.describe()} ({r.resource_id})' for r in left)}; it is still billed: rerun the "
            "destroy, and if that does not remove it, delete it in the cloud console"
        )
    return inventory.notes


def destroy_preview(
    fleet_file: Path,
    fleet: Fleet,
    summary: PreviewSummary,
    outdir: Path,
    runner: Runner = run_command,
    yes: bool = False,
    *,
    lister: Lister = list_previews,
    repo_root: Path = REPO_ROOT,
    synth: TargetSynth = synth_preview_target,
    after_failure: str = "fix the error above and rerun",
) -> PreviewResult:
    """Destroy one preview as found by its tags (every cloud of the fleet), then check it is gone."""
    if summary.fleet != fleet.name:
        raise UserError(
            f"preview {summary.environment} belongs to fleet {summary.fleet}, not {fleet.name}; "
            "destroy it with that fleet's file"
        )
    return _destroy_target(
        fleet_file,
        fleet,
        preview_target(summary),
        outdir,
        runner,
        yes,
        lister,
        repo_root,
        synth,
        after_failure,
    )


def _destroy_target(
    fleet_file: Path,
    fleet: Fleet,
    target: PreviewTarget,
    outdir: Path,
    runner: Runner,
    yes: bool,
    lister: Lister,
    repo_root: Path,
    synth: TargetSynth,
    after_failure: str,
) -> PreviewResult:
    clouds = fleet_clouds(fleet)
    command = _require_ready(fleet, clouds, repo_root)
    stacks = _stack_names(synth(clouds, fleet_file, target, outdir))
    estimate = estimate_from_synth(outdir)
    cmd = _run_cdktf(
        command,
        "destroy",
        stacks,
        environment=target.environment,
        outdir=outdir,
        runner=runner,
        yes=yes,
        repo_root=repo_root,
        after_failure=after_failure,
    )
    unverified = verify_destroyed(fleet, target.environment, lister)
    return PreviewResult(target.environment, "destroy", stacks, estimate, cmd, unverified=unverified)


def preview_down(
    fleet_file: Path,
    fleet: Fleet,
    branch: str,
    outdir: Path,
    runner: Runner = run_command,
    yes: bool = False,
    *,
    base_environment: str | None = None,
    lister: Lister = list_previews,
    repo_root: Path = REPO_ROOT,
    synth: TargetSynth = synth_preview_target,
) -> PreviewResult:
    """Destroy the branch's preview (all of its stacks, every cloud of the fleet) in the state of the base
    environment its tags name, and check afterwards that its tags no longer find it.

    base_environment: only what the user passed explicitly (--env), never a default. With clusters found
    it must agree with their tag; with none found (a failed `preview up` can leave a network and NAT
    gateways but no cluster) it is the only way to say which state holds the rest.
    """
    environment = preview_environment(branch)
    inventory = lister(fleet)
    records = [r for r in inventory.records if r.environment == environment and r.fleet == fleet.name]
    if records:
        [summary] = group_previews(records)
        tagged = preview_target(summary).base_environment
        if base_environment is not None and base_environment != tagged:
            raise UserError(
                f"--env {base_environment}: preview {environment} was made with --env {tagged} (its "
                f"{TAG_BASE_ENVIRONMENT} tag); leave out --env or pass --env {tagged}"
            )
        return destroy_preview(
            fleet_file, fleet, summary, outdir, runner, yes, lister=lister, repo_root=repo_root, synth=synth
        )
    if base_environment is None:
        unseen = f" (not looked at: {'; '.join(inventory.notes)})" if inventory.notes else ""
        raise UserError(
            f"no cluster of preview {environment} of fleet {fleet.name} found by its tags{unseen}; if a "
            "failed `preview up` left other resources (network, NAT gateways), rerun with --env <the "
            "environment it was made with>; check the branch name with `gpufleet preview list`"
        )
    problem = environment_problem(base_environment)
    if problem:
        raise UserError(f"--env: {problem}")
    target = PreviewTarget(
        environment=environment,
        branch=branch,
        owner="unknown",
        expires_at=0,  # no tags to keep: what is destroyed carries no plan-time drift that matters
        ttl_hours=fleet.previews.ttl_hours,
        base_environment=base_environment,
    )
    return _destroy_target(
        fleet_file,
        fleet,
        target,
        outdir,
        runner,
        yes,
        lister,
        repo_root,
        synth,
        "fix the error above and rerun",
    )


def preview_destroyer(
    fleet_file: Path,
    fleet: Fleet,
    outdir_root: Path,
    runner: Runner = run_command,
    *,
    lister: Lister = list_previews,
    repo_root: Path = REPO_ROOT,
    synth: TargetSynth = synth_preview_target,
) -> Callable[[PreviewSummary], PreviewResult]:
    """The `destroy` callable for sweep(): one preview at a time, each in outdir_root/<environment>.

    Destroys without Terraform's prompts: sweep() has asked for confirmation of the whole list first.
    """

    def destroy(summary: PreviewSummary) -> PreviewResult:
        return destroy_preview(
            fleet_file,
            fleet,
            summary,
            outdir_root / summary.environment,
            runner,
            yes=True,
            lister=lister,
            repo_root=repo_root,
            synth=synth,
            after_failure="fix the error above and rerun the sweep",
        )

    return destroy


# ---------------------------------------------------------------------------------------------------
# Sweep


@dataclass(frozen=True)
class SweepOutcome:
    expired: tuple[PreviewSummary, ...]  # what the sweep found expired (and would destroy, in a dry run)
    destroyed: tuple[PreviewSummary, ...]
    declined: bool = False  # the confirmation was declined: nothing was destroyed
    unverified: tuple[str, ...] = ()  # what the checks after each destroy could not look at


def sweep(
    previews: Sequence[PreviewSummary],
    now: float,
    destroy: Callable[[PreviewSummary], PreviewResult | None],
    *,
    confirm: Confirm,
    dry_run: bool = False,
) -> SweepOutcome:
    """Destroy the previews that have expired (expires_at < now); the live ones are never touched.

    confirm is shown the expired previews and must return True before anything is destroyed (the CLI
    asks, or passes `lambda _: True` for --yes). One failure does not stop the others; the failures are
    raised together afterwards.
    """
    expired = [p for p in previews if p.expired(now)]
    if dry_run or not expired:
        return SweepOutcome(tuple(expired), ())
    if not confirm(expired):
        return SweepOutcome(tuple(expired), (), declined=True)
    destroyed: list[PreviewSummary] = []
    unverified: list[str] = []
    failures: list[str] = []
    for preview in expired:
        try:
            result = destroy(preview)
        except (UserError, FleetRuntimeError) as exc:
            failures.append(f"{preview.environment}: {exc}")
            continue
        destroyed.append(preview)
        for note in result.unverified if result else ():
            if note not in unverified:
                unverified.append(note)
    if failures:
        raise FleetRuntimeError(
            f"sweep destroyed {len(destroyed)} of {len(expired)} expired previews; " + "; ".join(failures)
        )
    return SweepOutcome(tuple(expired), tuple(destroyed), unverified=tuple(unverified))
