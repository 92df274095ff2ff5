"""Synthesize a preview named by its environment (from its tags), for destroying what a sweep found.

A swept preview is known only by its tags: the environment name and the branch *slug*, from which
the branch hash in the name cannot be recomputed, so the environment is passed by name
(`python -m stacks --preview-env pv-...`) through the same per-cloud synth as everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpufleet.environments import preview_environment_problem
from gpufleet.errors import UserError
from gpufleet.spec import Fleet
from stacks.context import StackContext
from stacks.synth import SynthOptions, synth_fleet


@dataclass(frozen=True)
class PreviewTarget:
    """A preview environment named directly (not derived from a branch)."""

    environment: str  # pv-...: the gpufleet-environment tag
    branch: str  # the branch slug from the gpufleet-branch tag
    owner: str
    expires_at: int
    ttl_hours: int
    # The environment whose state bucket holds the preview's state (its gpufleet-base-environment tag):
    # destroying with any other would point Terraform at an empty state and destroy nothing.
    base_environment: str


def check_preview_environment(environment: str) -> None:
    """Only preview environments may be named directly: a typo must never reach `prod`'s stacks."""
    problem = preview_environment_problem(environment)
    if problem:
        raise UserError(problem)


def preview_stack_context(fleet: Fleet, target: PreviewTarget) -> StackContext:
    check_preview_environment(target.environment)
    return StackContext.for_preview(
        fleet,
        target.environment,
        target.branch,
        target.owner,
        target.ttl_hours,
        target.expires_at,
        target.base_environment,
    )


def synth_preview_target(
    clouds: list[str], fleet_file: Path, target: PreviewTarget, outdir: Path
) -> dict[str, object]:
    """The stacks of a named preview environment, merged into outdir (what `cdktf destroy` reads)."""
    check_preview_environment(target.environment)
    options = SynthOptions(
        fleet_file=fleet_file,
        environment=target.base_environment,
        branch=target.branch,
        owner=target.owner,
        expires_at=target.expires_at,
        preview_environment=target.environment,
        ttl_hours=target.ttl_hours,
    )
    return synth_fleet(clouds, options, outdir)
