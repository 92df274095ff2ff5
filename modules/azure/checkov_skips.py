"""Checkov suppressions that live on the resource they excuse.

A suppression is written into the resource's `"//"` comment object in cdk.tf.json (Terraform's JSON
syntax ignores "//" in block bodies; cdktf already keeps its own metadata there):

    "//": {"metadata": {...}, "checkov": ["checkov:skip=CKV_AZURE_170:<reason>"]}

checkov 3.3's terraform_json runner drops "//" keys before scanning and never reads inline suppressions
(checked: such a skip still reports FAILED, not SKIPPED), so tests/cloud/test_azure_stacks.py applies
them: a failure counts as accepted only when the failing resource carries a skip for that check id
here, and a skip that excuses no failure any more fails the test. One place states each exception.
(Same format as modules/gcp/checkov_skips.py.)
"""

from __future__ import annotations

from collections.abc import Mapping

from cdktf import TerraformResource

SKIP_COMMENT_KEY = "checkov"


def skip_checks(resource: TerraformResource, reasons: Mapping[str, str]) -> None:
    """Mark checks (check id -> why it does not apply) as accepted on this one resource."""
    for check_id, reason in reasons.items():
        if not reason.strip():
            raise ValueError(f"{check_id}: a checkov skip needs a reason")
    comments = [f"checkov:skip={check_id}:{reason}" for check_id, reason in sorted(reasons.items())]
    resource.add_override(f"//.{SKIP_COMMENT_KEY}", comments)
