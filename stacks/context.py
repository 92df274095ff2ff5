"""What every stack needs to know besides its cluster: fleet, environment, preview, tags, names.

Plain Python (no cdktf import): the CLI and the preview tooling use it too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gpufleet.environments import DEFAULT_ENVIRONMENT, fit_name, slug
from gpufleet.spec import Fleet, GpuPool

# Label keys and values must satisfy the strictest cloud (GCP labels: lowercase letters, digits, '_'
# and '-', at most 63 characters, keys starting with a letter), so one set works on AWS and Azure too.
TAG_FLEET = "gpufleet-fleet"
TAG_ENVIRONMENT = "gpufleet-environment"
TAG_MANAGED_BY = "gpufleet-managed-by"
TAG_PREVIEW = "gpufleet-preview"
TAG_BRANCH = "gpufleet-branch"
TAG_OWNER = "gpufleet-owner"
TAG_EXPIRES_AT = "gpufleet-expires-at"  # unix seconds: sortable and valid as a GCP label value
TAG_TTL_HOURS = "gpufleet-ttl-hours"
# The environment whose state bucket holds a preview's state: what a sweep needs to destroy it.
TAG_BASE_ENVIRONMENT = "gpufleet-base-environment"
PREVIEW_TAGS = (TAG_PREVIEW, TAG_BRANCH, TAG_OWNER, TAG_EXPIRES_AT, TAG_TTL_HOURS, TAG_BASE_ENVIRONMENT)


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
class PoolSize:
    min_nodes: int
    max_nodes: int
    spot: bool


@dataclass(frozen=True)
class StackContext:
    fleet: Fleet
    environment: str = DEFAULT_ENVIRONMENT
    preview: Preview | None = None
    # For previews: the environment whose state backend and model store they reuse.
    base_environment: str = DEFAULT_ENVIRONMENT
    extra_tags: dict[str, str] = field(default_factory=dict)

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
                TAG_OWNER: (slug(self.preview.owner) or "unknown")[:63].strip("-") or "unknown",
                TAG_EXPIRES_AT: str(self.preview.expires_at),
                TAG_TTL_HOURS: str(self.preview.ttl_hours),
                TAG_BASE_ENVIRONMENT: self.base_environment,
            }
        return tags | self.extra_tags

    def pool_size(self, pool: GpuPool) -> PoolSize:
        """Previews are small: at most `previews.max_gpu_nodes` GPU nodes, spot when the spec says so."""
        if not self.preview:
            return PoolSize(pool.min_nodes, pool.max_nodes, pool.spot)
        # Scale from zero to one node (cloud node groups need max >= 1; max_gpu_nodes is 0 or 1).
        return PoolSize(0, 1, self.fleet.previews.spot or pool.spot)

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

    def state_key(self, stack: str) -> str:
        """Remote state key: previews keep theirs apart, under `previews/<env>/`."""
        if self.preview:
            return f"previews/{self.environment}/{stack}.tfstate"
        return f"{self.environment}/{stack}.tfstate"
