"""Synthesized stacks (prod and preview, all clouds): no literal secret, every accepted finding documented."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.cloud.checkov_support import declared_skips
from tests.cloud.conftest import Synthesized
from tests.conftest import REPO

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GCP service account key": re.compile(r'"private_key_id"\s*:'),
    "Azure storage key": re.compile(r"AccountKey=[A-Za-z0-9+/=]{20,}"),
    "bearer token": re.compile(r"\bBearer\s+[A-Za-z0-9._-]{20,}"),
}
# Attributes that would hold a secret: a literal value there is a leak; a reference ("${...}") is not.
SECRET_ATTRIBUTES = re.compile(r"(password|secret|access_key|private_key|client_secret|token)$", re.I)


def literal_secret_attributes(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if isinstance(value, str) and SECRET_ATTRIBUTES.search(key) and value and "${" not in value:
                found.append(here)
            found += literal_secret_attributes(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += literal_secret_attributes(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("which", ["prod", "preview"])
def test_no_literal_secret_in_any_stack(
    which: str, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized if which == "prod" else synthesized_preview
    assert synth.stack_names()
    for name, stack in synth.stacks().items():
        text = json.dumps(stack)
        for what, pattern in SECRET_PATTERNS.items():
            assert not pattern.search(text), f"{name}: looks like a {what}"
        assert literal_secret_attributes(stack.get("resource", {})) == [], name
        assert literal_secret_attributes(stack.get("provider", {})) == [], name


def test_the_secret_scan_catches_a_planted_secret() -> None:
    planted = {"aws_db_instance": {"db": {"password": "hunter2hunter2"}}}
    assert literal_secret_attributes(planted) == [".aws_db_instance.db.password"]
    assert SECRET_PATTERNS["AWS access key id"].search("key AKIAABCDEFGHIJKLMNOP here")


def test_every_accepted_checkov_finding_is_listed_in_docs_security_md(
    synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    documented = (REPO / "docs" / "security.md").read_text()
    skipped = {
        check
        for synth in (synthesized, synthesized_preview)
        for stack in synth.stacks().values()
        for _, check in declared_skips(stack)
    }
    assert len(skipped) >= 10, skipped  # every cloud has some
    assert sorted(c for c in skipped if not re.search(rf"\b{c}\b", documented)) == []
