"""Environment names (`prod`, a preview per git branch) and cloud resource names built from them.

An environment name goes into every resource name of its stacks, so it is short (<= 20) and made
only of lowercase letters, digits and '-', starting with a letter: valid inside GKE (40), AKS node
resource groups, S3/GCS buckets, and, with the dashes removed, Azure storage accounts (24, alnum).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Final

DEFAULT_ENVIRONMENT: Final = "prod"
ENVIRONMENT_MAX_LENGTH: Final = 20
ENVIRONMENT_NAME: Final = re.compile(r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$")
PREVIEW_PREFIX: Final = "pv-"
HASH_LENGTH: Final = 6


def short_hash(text: str, length: int = HASH_LENGTH) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def environment_problem(name: str) -> str | None:
    if ENVIRONMENT_NAME.fullmatch(name) and "--" not in name:
        return None
    return (
        f"environment {name!r} is not valid; use 1-{ENVIRONMENT_MAX_LENGTH} lowercase letters, digits and "
        "single '-', starting with a letter (e.g. prod, staging)"
    )


def base_environment_problem(name: str) -> str | None:
    """A normal (non-preview) environment: `pv-` names belong to the preview commands only, which
    size, tag and destroy them as previews; a plain synth of one would build a full environment."""
    problem = environment_problem(name)
    if problem:
        return problem
    if name.startswith(PREVIEW_PREFIX):
        return (
            f"environment {name!r} starts with {PREVIEW_PREFIX!r}, which is reserved for previews; "
            "use `gpufleet preview up --branch B` for a preview, or another name (e.g. staging)"
        )
    return None


def preview_environment_problem(name: str) -> str | None:
    """Preview environments are named `pv-...`; anything else (prod!) must never be taken for one."""
    problem = environment_problem(name)
    if problem:
        return problem
    if not name.startswith(PREVIEW_PREFIX):
        return (
            f"environment {name!r} is not a preview (preview names start with {PREVIEW_PREFIX!r}); "
            "previews are destroyed by name only, other environments with `cdktf destroy` by hand"
        )
    return None


def slug(text: str) -> str:
    """Lowercase ASCII letters and digits separated by single '-' (accents folded, the rest dropped)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")


def preview_environment(branch: str) -> str:
    """`pv-<slug>-<hash>` for a git branch: deterministic, unique per branch, valid everywhere.

    The hash is of the branch as given, so `feature/a` and `feature-a` (same slug) still differ,
    and a branch with no ASCII at all (e.g. `機能`) still gets a usable name.
    """
    room = ENVIRONMENT_MAX_LENGTH - len(PREVIEW_PREFIX) - 1 - HASH_LENGTH
    body = slug(branch)[:room].strip("-")
    body = re.sub(r"-+", "-", body)
    name = f"{PREVIEW_PREFIX}{body}-{short_hash(branch)}" if body else f"{PREVIEW_PREFIX}{short_hash(branch)}"
    return name


def fit_name(*parts: str, max_length: int, alnum_only: bool = False) -> str:
    """Join parts with '-' (or nothing, for alnum-only names) and fit them into max_length.

    Too long: keep the start and end with a hash of the whole name, so two long names that share
    a prefix stay distinct and the same input always gives the same name.
    """
    if alnum_only:
        full = re.sub(r"[^a-z0-9]", "", "".join(parts).lower())
    else:
        full = re.sub(r"-+", "-", "-".join(p for p in parts if p).lower()).strip("-")
    if len(full) <= max_length:
        return full
    digest = short_hash(full)
    keep = max_length - len(digest) - (0 if alnum_only else 1)
    head = full[:keep] if alnum_only else full[:keep].rstrip("-")
    return f"{head}{digest}" if alnum_only else f"{head}-{digest}"
