"""The object-store emulators for tests: started on 127.0.0.1, skipped only when not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.objectstore.emulators import (
    Emulator,
    EmulatorKind,
    EmulatorMissing,
    emulator_command,
    running_emulator,
)


@contextlib.contextmanager
def emulator_or_skip(kind: EmulatorKind, log_dir: Path) -> Iterator[Emulator]:
    """A running emulator of `kind`. Skips only when its program is missing; a failed start fails."""
    try:
        emulator_command(kind, port=0)
    except EmulatorMissing as exc:
        pytest.skip(f"{kind} emulator: {exc}")
    with running_emulator(kind, log_dir) as emulator:
        yield emulator
