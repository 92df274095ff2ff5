"""The one place where an error becomes a line on stderr and an exit code; no traceback reaches a user.

Exit codes: 0 done · 1 the fleet or a cloud could not do it (runtime) · 2 the user's input (fix it
and retry) · 70 a bug in gpufleet (the traceback is written to a file, named in the line) ·
130 interrupted.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from gpufleet.cli.app import err_console
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import FleetSpecError

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h)
EXIT_INTERRUPTED = 130


def _say(prefix: str, message: str) -> None:
    err_console.print(f"{prefix}: {message}", markup=False, highlight=False)


def _cloud_sdk_error(exc: BaseException) -> bool:
    """botocore's errors (the model store, cloud listers), without importing botocore to check."""
    module = sys.modules.get("botocore.exceptions")
    return module is not None and isinstance(exc, module.BotoCoreError | module.ClientError)


def _write_crash_report(exc: BaseException) -> Path | None:
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix=f"gpufleet-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt", delete=False
        ) as out:
            out.write(f"gpufleet {' '.join(sys.argv[1:])}\n\n")
            traceback.print_exception(exc, file=out)
            return Path(out.name)
    except OSError:
        return None


def exit_code_for(exc: BaseException) -> int:
    """Print the one line for `exc` and return its exit code."""
    if isinstance(exc, FleetSpecError):
        for line in exc.errors:
            _say("error", line)
        return EXIT_USAGE
    if isinstance(exc, UserError):
        _say("error", str(exc))
        return EXIT_USAGE
    if isinstance(exc, FleetRuntimeError):
        _say("failed", str(exc))
        return EXIT_RUNTIME
    if isinstance(exc, KeyboardInterrupt):
        _say("interrupted", "stopped by Ctrl-C")
        return EXIT_INTERRUPTED
    if _cloud_sdk_error(exc):
        _say("failed", f"cloud API: {exc}")
        return EXIT_RUNTIME
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        _say("failed", f"{exc.strerror or exc}{where}")
        return EXIT_RUNTIME
    report = _write_crash_report(exc)
    details = f"; details in {report}" if report else ""
    _say(
        "internal error",
        f"{type(exc).__name__}: {str(exc)[:200]} (a bug in gpufleet, please report it{details})",
    )
    return EXIT_INTERNAL


def run(app: Callable[..., object]) -> None:
    """Run the Typer app with click's own handling off, so that every ending passes through here."""
    import typer

    try:
        result = app(standalone_mode=False)
    except typer.Abort:  # click's form of Ctrl-C at a prompt
        sys.exit(exit_code_for(KeyboardInterrupt()))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.exceptions.TyperException as exc:  # a usage mistake (unknown option, bad value)
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001  (this is the top of the program)
        sys.exit(exit_code_for(exc))
    sys.exit(result if isinstance(result, int) else 0)
