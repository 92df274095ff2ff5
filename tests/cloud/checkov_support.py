"""Checkov on a synthesized stack, with the suppressions that modules/checkov.py writes applied.

Checkov 3.3's terraform_json runner parses the `"//"` suppressions on a resource but does not apply them
(it reports every suppressed check as failed), so the tests apply them here: a failure passes only when the
failing resource carries a suppression for that exact check, and a suppression that no longer matches a
failure fails the test. See docs/security.md. Shared by every cloud's stack tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import REPO

CHECKOV = REPO / ".venv-tools" / "bin" / "checkov"
SKIP_PREFIX = "checkov:skip="  # modules/checkov.py (not imported: it pulls in cdktf)
CHECK_ID = re.compile(r"[A-Z0-9_]+")
MIN_REASON_LENGTH = 30
# What checkov 3.3's terraform_json parser cannot read: it takes every entry of a top-level block as a
# labelled block (a mapping), so Terraform's label-less `import` block and a plain string in the
# `terraform` block (`required_version`) make the whole file fail to parse. Neither holds anything
# checkov checks (an address and an id; a version constraint): the scanned copy leaves them out, and
# every resource, data source, provider and backend is still checked. See docs/security.md.
UNPARSEABLE_BLOCKS = ("import",)


def checkov_readable(stack: dict[str, Any]) -> dict[str, Any]:
    readable = {k: v for k, v in stack.items() if k not in UNPARSEABLE_BLOCKS}
    if isinstance(readable.get("terraform"), dict):
        readable["terraform"] = {k: v for k, v in readable["terraform"].items() if isinstance(v, dict)}
    return readable


def block_names(stack: dict[str, Any]) -> list[str]:
    """The names of every resource and data source in the stack (failures are matched by name)."""
    blocks = [entries for block in ("resource", "data") for entries in stack.get(block, {}).values()]
    return [name for entries in blocks for name in entries]


def declared_skips(stack: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(resource name, check id) -> reason, from the `"//"` suppressions on resources and data sources.

    cdktf names are unique within a stack, whatever the type, so the name alone identifies the resource.
    """
    skips: dict[tuple[str, str], str] = {}
    for block in ("resource", "data"):
        for entries in stack.get(block, {}).values():
            for name, body in entries.items():
                comment = body.get("//", {})
                for key, reason in comment.items() if isinstance(comment, dict) else ():
                    if key.startswith(SKIP_PREFIX):
                        check_id = key.removeprefix(SKIP_PREFIX)
                        assert CHECK_ID.fullmatch(check_id), f"{name}: malformed suppression {key!r}"
                        skips[(name, check_id)] = reason
    return skips


def checkov_failures(stack_file: Path) -> list[tuple[str, str]]:
    """(resource name, check id) of every failed check: the documented checkov command, JSON output.

    Checkov reports `<type>.<name>` from graph checks but `resource.<name>` or `data.<name>` from attribute
    checks; the name is the part both share.
    """
    cmd = [
        str(CHECKOV),
        "-f",
        str(stack_file),
        "--framework",
        "terraform_json",
        "--skip-download",
        "--compact",
        "--quiet",
        "-o",
        "json",
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"}, timeout=300
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failures: list[tuple[str, str]] = []
    for part in reports:
        assert part.get("summary", {}).get("parsing_errors", 0) == 0, f"{stack_file}: checkov parsing errors"
        for failed in part.get("results", {}).get("failed_checks", []):
            failures.append((failed["resource"].rsplit(".", 1)[-1], failed["check_id"]))
    return failures


def assert_checkov_clean(stack_name: str, stack: dict[str, Any], stack_file: Path) -> None:
    """Zero failed checks, except those suppressed on the failing resource with a reason; no stale ones."""
    names = block_names(stack)
    assert len(names) == len(set(names)), f"{stack_name}: failures are matched by name; names repeat"
    skips = declared_skips(stack)
    short = {skip: reason for skip, reason in skips.items() if len(reason.strip()) <= MIN_REASON_LENGTH}
    assert not short, f"{stack_name}: suppressions need a reason a reviewer can judge: {short}"
    readable = checkov_readable(stack)
    if readable != stack:
        with tempfile.TemporaryDirectory(prefix="checkov-") as folder:
            scanned = Path(folder) / stack_file.name
            scanned.write_text(json.dumps(readable))
            failures = checkov_failures(scanned)
    else:
        failures = checkov_failures(stack_file)
    unjustified = [f for f in failures if f not in skips]
    assert not unjustified, f"{stack_name}: checkov failures without a suppression: {unjustified}"
    # A suppression that excuses nothing any more is stale: remove it from the construct.
    stale = set(skips) - set(failures)
    assert not stale, f"{stack_name}: suppressions that no longer match a failure: {sorted(stale)}"
