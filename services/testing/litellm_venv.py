"""LiteLLM in its own pinned virtualenv, for the client tests and the bench's proxy comparison.

LiteLLM is not a dependency of llmmesh and never enters requirements.lock
(its pins conflict with ours). `ensure_venv` makes `.tools/litellm-venv`
(git-ignored, removed by `make clean`) with the pinned `litellm[proxy]`:
one venv for both users, since the bench needs the proxy extra and the SDK
comes with it (a cold install of the extra took 11 s with uv, the SDK alone
7 s; two venvs would cost more in total). `make litellm-venv` runs it, and
`make test` and `make bench` depend on that target.

It installs with the `uv` next to the running interpreter (`.venv/bin/uv`,
which `make setup` pins; pip took 2.5 min for the same install), else pip.
Without an index the venv is not made: the callers skip, saying why (the
client tests fail instead when CI is set, as for promtool).

`client_env` is the environment a LiteLLM process gets here: its cost map
read from the package (no fetch at import), telemetry off, and any HTTP(S)
request that is not for loopback sent to a closed port, so nothing reaches
the internet.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LITELLM_PIN = "litellm[proxy]==1.108.7"
# LiteLLM's own dependencies are ranges: uv resolves them as of this date, so a later release of one cannot break
# a clean clone's `make test` (move it with the pin).
RESOLVED_AS_OF = "2026-12-01T00:00:00Z"
# The repository's root: the venv is the same one whichever directory pytest or the bench runs from.
ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = ROOT / ".tools" / "litellm-venv"
INSTALL_TIMEOUT_S = 900.0
# Nothing listens on the discard port: a proxied request fails at once instead of leaving the machine.
_NOWHERE = "http://127.0.0.1:9"


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / "bin" / "python"


def installed_version(venv: Path = VENV_DIR) -> str:
    """The litellm version in the venv, "" when it is not there."""
    if not venv_python(venv).exists():
        return ""
    found = subprocess.run(
        [str(venv_python(venv)), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return found.stdout.strip() if found.returncode == 0 else ""


def ensure_venv(venv: Path = VENV_DIR, *, log_file: Path | None = None) -> tuple[bool, str]:
    """(ready, reason): makes the venv and installs the pin unless it is already there."""
    wanted = LITELLM_PIN.partition("==")[2]
    if installed_version(venv) == wanted:
        return True, f"litellm {wanted} in {venv}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The bench and a test run may both get here: one installs, the other waits and finds it done.
    with _locked(venv.parent / f"{venv.name}.lock"):
        if installed_version(venv) == wanted:
            return True, f"litellm {wanted} in {venv}"
        try:
            with open(log_file or os.devnull, "wb") as log:
                for step in _install_steps(venv):
                    done = subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)
                    if done.returncode != 0:
                        return False, f"{step[0]} install of {LITELLM_PIN} failed (exit {done.returncode}; no index?)"
        except (OSError, subprocess.SubprocessError) as error:
            return False, f"could not make {venv}: {error}"
    if installed_version(venv) != wanted:
        return False, f"{LITELLM_PIN} did not install into {venv}"
    return True, f"litellm {wanted} installed into {venv}"


def _install_steps(venv: Path) -> list[list[str]]:
    """Make the venv when it is not there, then install the pin (over another litellm version, if any)."""
    uv = Path(sys.executable).parent / "uv"
    if uv.exists():
        make = [str(uv), "venv", "--quiet", "--clear", "--python", sys.executable, str(venv)]
        install = [str(uv), "pip", "install", "--quiet", "--python", str(venv_python(venv))]
        install += ["--exclude-newer", RESOLVED_AS_OF, LITELLM_PIN]
    else:
        make = [sys.executable, "-m", "venv", "--clear", str(venv)]
        install = [str(venv_python(venv)), "-m", "pip", "install", "--quiet", LITELLM_PIN]
    return [install] if venv_python(venv).exists() else [make, install]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def client_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a LiteLLM process: local cost map, no telemetry, no way out but loopback."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "HTTP_PROXY": _NOWHERE,
            "HTTPS_PROXY": _NOWHERE,
            "http_proxy": _NOWHERE,
            "https_proxy": _NOWHERE,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def main() -> int:
    """`make litellm-venv`: a warning, not a failure, without an index (the tests then say what is missing)."""
    ready, reason = ensure_venv(log_file=VENV_DIR.parent / "litellm-venv-install.log")
    print(reason if ready else f"warning: {reason}; the LiteLLM tests will be skipped (fail when CI is set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
