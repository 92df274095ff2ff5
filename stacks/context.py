"""What every stack needs to know besides its cluster: fleet, environment, preview, tags, names.

Plain Python (no cdktf import): the CLI and the preview tooling use it too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpufleet.environments import DEFAULT_ENVIRONMENT, fit_name, slug
from gpufleet.spec import DEFAULT_OWNER_TAG, Fleet, GpuPool
from stacks.profile import PRODUCTION, EnvironmentProfile, PoolSize, preview_profile

# Label keys and values must satisfy the strictest cloud (GCP labels: lowercase letters, digits, '_'
# and '-', at most 63 characters, keys starting with a letter), so one set works on AWS and Azure too.
TAG_FLEET = "gpufleet-fleet"
TAG_ENVIRONMENT = "gpufleet-environment"
TAG_MANAGED_BY = "gpufleet-managed-by"
TAG_PREVIEW = "gpufleet-preview"
TAG_BRANCH = "gpufleet-branch"
# The owner's tag key is fleet.yaml `previews.owner_tag` (StackContext.owner_tag); this is its default.
TAG_OWNER = DEFAULT_OWNER_TAG
TAG_EXPIRES_AT = "gpufleet-expires-at"  # unix seconds: sortable and valid as a GCP label value
TAG_TTL_HOURS = "gpufleet-ttl-hours"
# The environment whose state bucket holds a preview's state: what a sweep needs to destroy it.
TAG_BASE_ENVIRONMENT = "gpufleet-base-environment"
# The preview tags with the default owner key (StackContext.preview_tag_keys() has the fleet's own).
PREVIEW_TAGS = (TAG_PREVIEW, TAG_BRANCH, TAG_OWNER, TAG_EXPIRES_AT, TAG_TTL_HOURS, TAG_BASE_ENVIRONMENT)

# Shared stacks create the bucket/account the other stacks keep their state in, so their own state starts
# on local disk: in this folder beside the fleet file (the repo), never inside the synth output, which
# every synth replaces. Git ignores it (terraform.*.tfstate*); back it up, or move it into the remote
# backend once that exists (`terraform init -migrate-state` after switching the stack's backend).
BOOTSTRAP_STATE_DIR = "bootstrap-state"
# Where synth finally writes its output. A cloud's synth process may write to a staging folder first; the
# bootstrap state path is relative to the final stack folder, so the process is told where that is.
OUTDIR_ENV = "GPUFLEET_OUTDIR"
DEFAULT_OUTDIR = "cdktf.out"


@dataclass(frozen=True)
class Preview:
    """A per-branch preview environment: short-lived, small, tagged for the sweeper."""

    branch: str
    owner: str
    ttl_hours: int
    expires_at: int  # unix seconds

    @classmethod
    def starting_now(cls, branch: str, owner: str, ttl_hours: int) -> Preview:
        # Rounded to the hour so two synths of the same preview within the hour are identical.
        now = int(time.time()) // 3600 * 3600
        return cls(branch=branch, owner=owner, ttl_hours=ttl_hours, expires_at=now + ttl_hours * 3600)


@dataclass(frozen=True)
class StackContext:
    fleet: Fleet
    environment: str = DEFAULT_ENVIRONMENT
    preview: Preview | None = None
    # For previews: the environment whose state backend and model store they reuse.
    base_environment: str = DEFAULT_ENVIRONMENT
    extra_tags: dict[str, str] = field(default_factory=dict)
    # The folder of the fleet file (the repo) and the synth output folder (terraform runs each stack in
    # <outdir>/stacks/<stack>): what the bootstrap state path is relative to.
    fleet_dir: Path = Path(".")
    outdir: Path = Path(DEFAULT_OUTDIR)

    @classmethod
    def for_preview(
        cls,
        fleet: Fleet,
        environment: str,
        branch: str,
        owner: str,
        ttl_hours: int | None = None,
        expires_at: int | None = None,
        base_environment: str = DEFAULT_ENVIRONMENT,
    ) -> StackContext:
        """A preview context; expiry defaults to now + TTL (the spec's unless given)."""
        ttl = ttl_hours or fleet.previews.ttl_hours
        preview = Preview.starting_now(branch, owner, ttl)
        if expires_at:
            preview = Preview(branch, owner, ttl, expires_at)
        return cls(fleet=fleet, environment=environment, preview=preview, base_environment=base_environment)

    @property
    def is_preview(self) -> bool:
        return self.preview is not None

    @property
    def profile(self) -> EnvironmentProfile:
        """How this environment is sized (stacks/profile.py)."""
        return preview_profile(self.fleet.previews) if self.preview else PRODUCTION

    @property
    def owner_tag(self) -> str:
        """The tag key a preview's owner is recorded under (fleet.yaml previews.owner_tag)."""
        return self.fleet.previews.owner_tag

    def preview_tag_keys(self) -> tuple[str, ...]:
        return tuple(self.owner_tag if key == TAG_OWNER else key for key in PREVIEW_TAGS)

    def tags(self) -> dict[str, str]:
        """Tags/labels for every taggable resource of this environment."""
        tags = {
            TAG_FLEET: self.fleet.name,
            TAG_ENVIRONMENT: self.environment,
            TAG_MANAGED_BY: "gpufleet",
        }
        if self.preview:
            tags |= {
                TAG_PREVIEW: "true",
                TAG_BRANCH: (slug(self.preview.branch) or "none")[:63].strip("-") or "none",
                self.owner_tag: (slug(self.preview.owner) or "unknown")[:63].strip("-") or "unknown",
                TAG_EXPIRES_AT: str(self.preview.expires_at),
                TAG_TTL_HOURS: str(self.preview.ttl_hours),
                TAG_BASE_ENVIRONMENT: self.base_environment,
            }
        return tags | self.extra_tags

    def pool_size(self, pool: GpuPool) -> PoolSize:
        """A GPU pool's size in this environment (max_nodes 0: the stacks build no such pool)."""
        return self.profile.gpu_pool_size(pool)

    # -- names -------------------------------------------------------------------------------
    def stack_name(self, *parts: str) -> str:
        return fit_name(self.environment, *parts, max_length=63)

    def cluster_name(self, cluster: str, max_length: int) -> str:
        return fit_name(cluster, self.environment, max_length=max_length)

    def resource_name(self, *parts: str, max_length: int = 63, alnum_only: bool = False) -> str:
        """A name unique to fleet + environment (e.g. a bucket), fitted to the cloud's limit."""
        return fit_name(
            self.fleet.name, self.environment, *parts, max_length=max_length, alnum_only=alnum_only
        )

    def store_bucket(self, max_length: int = 63) -> str:
        """Model store bucket/container: shared by a base environment and its previews."""
        return fit_name(self.fleet.model_store.bucket, self.base_environment, max_length=max_length)

    def global_bucket(self, *parts: str, max_length: int = 63) -> str:
        """A bucket of the base environment. Bucket names are one namespace across all accounts, so they
        start from the store bucket name the user picked to be unique, never from the fleet name."""
        return fit_name(self.fleet.model_store.bucket, self.base_environment, *parts, max_length=max_length)

    def state_bucket(self, max_length: int = 63) -> str:
        return self.global_bucket("tfstate", max_length=max_length)

    def bootstrap_state_path(self, stack: str) -> str:
        """A shared stack's local state file, relative to the folder terraform runs the stack in, so the
        synthesized stack holds no absolute path of the machine or directory synth ran from."""
        state = Path(os.path.abspath(self.fleet_dir / BOOTSTRAP_STATE_DIR / f"terraform.{stack}.tfstate"))
        return os.path.relpath(state, os.path.abspath(self.outdir / "stacks" / stack))

    def state_key(self, stack: str) -> str:
        """Remote state key: previews keep theirs apart, under `previews/<env>/`."""
        if self.preview:
            return f"previews/{self.environment}/{stack}.tfstate"
        return f"{self.environment}/{stack}.tfstate"
