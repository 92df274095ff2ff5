"""Whatever the YAML, parse_fleet returns a Fleet or raises FleetSpecError of clean one-line errors."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.spec import Fleet, FleetSpecError, parse_fleet
from tests.conftest import REPO

EXAMPLE_DOC: dict[str, Any] = yaml.safe_load((REPO / "fleet.yaml").read_text())

# Field names mixed into random keys so generated documents get past the top level into the models.
FIELD_NAMES = [
    "name",
    "clusters",
    "model_store",
    "models",
    "rollout",
    "previews",
    "dr",
    "cloud",
    "wave",
    "replicas",
    "region",
    "gpu_pools",
    "instance_type",
    "bucket",
    "steps",
    "inputs",
    "dims",
]
CLOUD_VALUES = ["local", "aws", "gcp", "azure"]

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(CLOUD_VALUES + FIELD_NAMES + ["g5.xlarge", "builtin:mlp", "FP32", "us-east-1"])
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8) | st.integers() | st.booleans() | st.none()
values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=40,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_outcome(text: str) -> Fleet | None:
    """parse_fleet either succeeds or fails with the product's error shape; nothing else escapes."""
    try:
        fleet = parse_fleet(text)
    except FleetSpecError as exc:
        assert exc.errors
        assert str(exc) == "\n".join(exc.errors)
        for line in exc.errors:
            assert line and line == line.strip()
            assert line.splitlines() == [line], f"not one line: {line!r}"
            assert ": " in line and "; " in line, f"no '<where>: <problem>; <fix>' shape: {line!r}"
            assert "Traceback" not in line
            assert "internal error" not in line, line  # a bug in the validator, not in the input
        return None
    assert isinstance(fleet, Fleet)
    for cluster in fleet.cloud_clusters():
        for pool in cluster.gpu_pools:  # downstream code relies on these being filled in
            assert pool.gpu_type is not None and pool.gpu_count is not None
    return fleet


def dump(document: object) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@SETTINGS
@given(st.dictionaries(keys, values, max_size=8) | values)
def test_arbitrary_yaml_structures(document: object) -> None:
    check_outcome(dump(document))


@SETTINGS
@given(
    st.fixed_dictionaries(
        {
            "name": leaves,
            "clusters": st.lists(st.dictionaries(keys, values, max_size=6) | values, max_size=4),
            "model_store": st.dictionaries(keys, values, max_size=4) | values,
        },
        optional={"models": values, "rollout": values, "previews": values, "dr": values},
    )
)
def test_arbitrary_values_under_the_real_top_level_keys(document: dict[str, object]) -> None:
    check_outcome(dump(document))


def _paths(node: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path from the root to a value in the document."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


EXAMPLE_PATHS = _paths(EXAMPLE_DOC)


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


@SETTINGS
@given(st.sampled_from(EXAMPLE_PATHS))
def test_example_with_a_value_deleted(path: tuple[Any, ...]) -> None:
    document = copy.deepcopy(EXAMPLE_DOC)
    del _parent(document, path)[path[-1]]
    check_outcome(dump(document))


@SETTINGS
@given(st.sampled_from(EXAMPLE_PATHS), st.data())
def test_example_with_a_value_of_another_type(path: tuple[Any, ...], data: st.DataObject) -> None:
    document = copy.deepcopy(EXAMPLE_DOC)
    parent = _parent(document, path)
    old = parent[path[-1]]
    parent[path[-1]] = data.draw(values.filter(lambda new: type(new) is not type(old)), label="replacement")
    check_outcome(dump(document))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(EXAMPLE_PATHS), values), min_size=1, max_size=4))
def test_example_with_several_values_replaced(replacements: list[tuple[tuple[Any, ...], object]]) -> None:
    document = copy.deepcopy(EXAMPLE_DOC)
    for path, new in replacements:
        try:
            _parent(document, path)[path[-1]] = new
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    check_outcome(dump(document))


def test_unchanged_example_is_valid() -> None:
    # The mutation tests above start from it: if it were invalid they would prove little.
    assert check_outcome(dump(EXAMPLE_DOC)) is not None


YAML_ALPHABET = st.sampled_from(list("{}[]:-,&*!|>'\"#%@`? \n\t.0123456789abcdefxyz<=~") + ["\x00", "\u2028"])


@SETTINGS
@given(st.text() | st.text(alphabet=YAML_ALPHABET, max_size=60))
def test_arbitrary_text(text: str) -> None:
    check_outcome(text)


@SETTINGS
@given(st.sampled_from(EXAMPLE_PATHS), st.text(alphabet=YAML_ALPHABET, min_size=1, max_size=10))
def test_example_text_with_garbage_inserted(path: tuple[Any, ...], garbage: str) -> None:
    # Text-level damage to a real file: garbage spliced in after the line holding a key.
    text = dump(EXAMPLE_DOC)
    key = str(path[-1])
    position = text.find(f"{key}:")
    position = len(text) // 2 if position < 0 else position + len(key) + 1
    check_outcome(text[:position] + garbage + text[position:])
