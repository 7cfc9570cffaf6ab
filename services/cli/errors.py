"""How the CLI reports failures: one line on stderr, an exit code that says what kind.

MeshErrors become one line with the gRPC code and a hint for the mistakes a
person makes first (no router running, no API key, an empty address).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common.errors import MeshError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to print as one line; `exit_code` 1 for the mesh's errors, 2 for usage and configuration."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def address(flag_value: str | None, variable: str, default: str, flag: str) -> str:
    """The address to dial: the flag, else $variable, else `default`; refuses empty or port-less ones."""
    if flag_value is not None:
        chosen, source = flag_value, flag
    elif variable in os.environ:
        chosen, source = os.environ[variable], variable
    else:
        return default
    if not chosen.strip():
        raise CliError(f"{source} is empty; give host:port (e.g. {default}) or leave it unset", EXIT_USAGE)
    host, _, port = chosen.rpartition(":")
    if "://" not in chosen and not chosen.startswith("unix:") and (not host or not port.isdigit()):
        raise CliError(f"{source}={chosen!r} is not host:port (e.g. {default})", EXIT_USAGE)
    return chosen


def mesh_error(error: MeshError, *, target: str, service: str, flag: str, variable: str, timeout: float) -> CliError:
    """One line for a failed call to `service` at `target`, with a hint where one helps."""
    code = error.code.name
    if code == "UNAVAILABLE" and not error.reason and _could_not_connect(error.message):
        return CliError(
            f"no {service} answers at {target} ({_cause(error.message)}); start the local mesh with "
            f"`llmmesh up`, or point {flag} or {variable} at a running {service}"
        )
    if code == "DEADLINE_EXCEEDED" and not error.reason:
        return CliError(f"DEADLINE_EXCEEDED: no answer from the {service} at {target} within {timeout:g}s (--timeout)")
    line = f"{code}: {error.message}"
    # The request as typed is wrong (a blank prompt, 'auto:', a bad setting): a usage error.
    exit_code = EXIT_USAGE if code == "INVALID_ARGUMENT" else EXIT_ERROR
    if code == "UNAUTHENTICATED":
        key_set = bool(os.environ.get("LLMMESH_API_KEY"))
        line += (
            " (the CLI sends $LLMMESH_API_KEY: check its value)"
            if key_set
            else " (set LLMMESH_API_KEY to your tenant's key; `llmmesh auth new-key` makes one)"
        )
    if error.retry_after is not None:
        line += f" (retry after {error.retry_after:.1f}s)"
    return CliError(line, exit_code)


def _could_not_connect(message: str) -> bool:
    lowered = message.lower()
    return "failed to connect" in lowered or "connection refused" in lowered or "dns resolution failed" in lowered


def _cause(message: str) -> str:
    lowered = message.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "dns resolution failed" in lowered:
        return "the name does not resolve"
    return "could not connect"
