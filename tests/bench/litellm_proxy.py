"""LiteLLM's proxy for the comparison: the shared pinned venv, and one worker.

LiteLLM is not a dependency of llmmesh and never enters requirements.lock:
the proxy runs from the venv services/testing/litellm_venv.py makes
(`.tools/litellm-venv`, the same one the LiteLLM client tests use; `make
bench` depends on `make litellm-venv`, and the scenario makes it itself when
run another way). Without it (no index) the scenario is skipped with the
reason; `make bench` goes on.

The proxy runs as LiteLLM's own CLI (`litellm --config ... --num_workers 1`)
with a config pointing one model at the bench's fake upstream, no database,
no master key (auth off, like the mesh's bench), its cost map read from the
package (no fetch at start) and its telemetry off.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from services.testing import litellm_venv

START_TIMEOUT_S = 120.0


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
        **litellm_venv.client_env(),
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
