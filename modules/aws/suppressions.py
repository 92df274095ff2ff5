"""Checkov suppressions written onto the synthesized resource, next to what they excuse.

A suppression is a `"//"` comment key on the resource in cdk.tf.json (`"checkov:skip=<ID>": "<reason>"`), the
HCL JSON equivalent of an inline `#checkov:skip=<ID>:<reason>` comment. Checkov 3.3's terraform_json runner
parses these comments but does not apply them (it scans every resource with an empty skip list), so the
checkov test in tests/cloud/test_aws_stacks.py applies them: a failure counts as skipped only when the failing
resource carries a suppression for that check, and a suppression that no longer matches a failure fails the
test. Every suppression needs a reason a reviewer can judge.
"""

from __future__ import annotations

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
