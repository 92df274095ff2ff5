"""Checkov suppressions written onto the synthesized resource, next to what they excuse (every cloud).

A suppression is a `"//"` comment key on the resource in cdk.tf.json (`"checkov:skip=<ID>": "<reason>"`), the
HCL JSON equivalent of an inline `#checkov:skip=<ID>:<reason>` comment; Terraform ignores `"//"` keys and
cdktf already keeps its own metadata there. Checkov 3.3's terraform_json runner parses these comments but
does not apply them (it scans every resource with an empty skip list), so the checkov tests
(tests/cloud/checkov_support.py, used by every cloud's stack tests) apply them: a failure counts as skipped
only when the failing resource carries a suppression for that check, and a suppression that no longer
matches a failure fails the test. Every suppression needs a reason a reviewer can judge. See
docs/security.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from cdktf import TerraformDataSource, TerraformResource, TerraformStack

SKIP_PREFIX = "checkov:skip="


def skip_check(resource: TerraformResource | TerraformDataSource, check_id: str, reason: str) -> None:
    """Record a justified checkov suppression for `check_id` on `resource` (a resource or data source)."""
    if not reason.strip():
        raise ValueError(f"a checkov suppression needs a reason ({check_id})")
    block = "data" if isinstance(resource, TerraformDataSource) else "resource"
    # Through the stack: cdktf rewrites a data source's own "//" key after its overrides, but applies stack
    # overrides last, to resources and data sources alike.
    address = f"{block}.{resource.terraform_resource_type}.{resource.friendly_unique_id}"
    TerraformStack.of(resource).add_override(f"{address}.//.{SKIP_PREFIX}{check_id}", reason)


def skip_checks(resource: TerraformResource | TerraformDataSource, reasons: Mapping[str, str]) -> None:
    """Record several suppressions (check id -> why it does not apply) on `resource`, one key per check."""
    for check_id, reason in reasons.items():  # all or nothing: check every reason before writing one
        if not reason.strip():
            raise ValueError(f"a checkov suppression needs a reason ({check_id})")
    for check_id, reason in reasons.items():
        skip_check(resource, check_id, reason)
