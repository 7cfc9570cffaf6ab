"""LiteLLM's proxy for the comparison: its own virtualenv, made on demand, and one worker.

LiteLLM is not a dependency of llmmesh and never enters requirements.lock:
`ensure_venv` makes `.bench/litellm-venv` (git-ignored) with the pinned
`litellm[proxy]` the first time the scenario runs, from the package index pip
is set up for. Without it (no network, no index) the scenario is skipped with
the reason; `make bench` goes on.

The proxy runs as LiteLLM's own CLI (`litellm --config ... --num_workers 1`)
with a config pointing one model at the bench's fake upstream, no database,
no master key (auth off, like the mesh's bench), its cost map read from the
package (no fetch at start) and its telemetry off.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

LITELLM_PIN = "litellm[proxy]==1.108.7"
VENV_DIR = Path(".bench/litellm-venv")
INSTALL_TIMEOUT_S = 900.0
START_TIMEOUT_S = 120.0


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
    try:
        if not venv_python(venv).exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        with open(log_file or os.devnull, "wb") as log:
            done = subprocess.run(
                [str(venv_python(venv)), "-m", "pip", "install", "-q", LITELLM_PIN],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_S,
            )
    except (OSError, subprocess.SubprocessError) as error:
        return False, f"could not make {venv}: {error}"
    if done.returncode != 0:
        return False, f"pip install {LITELLM_PIN} failed (exit {done.returncode}; no network or no index?)"
    if installed_version(venv) != wanted:
        return False, f"{LITELLM_PIN} did not install into {venv}"
    return True, f"litellm {wanted} installed into {venv}"


def write_config(path: Path, model: str, upstream_base_url: str) -> Path:
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": upstream_base_url,
                    "api_key": "sk-bench-not-a-real-key",
                },
            }
        ],
        # Defaults otherwise: what an operator gets from `litellm --config`.
        "litellm_settings": {"telemetry": False},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiteLLMProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start(venv: Path, config: Path, workdir: Path) -> LiteLLMProcess:
    """Starts the proxy and waits for its liveness route; raises with the log tail if it dies."""
    port = _free_port()
    log_path = workdir / "litellm.log"
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
        # The mesh is measured with auth off; LiteLLM refuses that unless told (this process is loopback only).
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str((venv / "bin" / "litellm").resolve()),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
    proxy = LiteLLMProcess(process, port, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"litellm exited {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{proxy.base_url}/health/liveliness", timeout=2) as answer:
                if answer.status == 200:
                    return proxy
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    proxy.stop()
    raise TimeoutError(f"litellm did not answer within {START_TIMEOUT_S:.0f}s:\n{log_path.read_text()[-2000:]}")
