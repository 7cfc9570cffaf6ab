"""A real Prometheus (and promtool) on 127.0.0.1 and a free port, scraping given targets, for tests.

Debian's `prometheus` package provides both binaries; `.ci/run` and `make
test` install it. Outside CI the tests that need them skip, saying so; in CI
(`CI` set) they fail instead, so a missing package cannot pass unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

INSTALL_HINT = (
    "{binary} is not installed (.ci/run and make test install the Debian package `prometheus` with apt-get "
    "when run as root; or apt-get install prometheus)"
)


def binary(name: str) -> str | None:
    """`prometheus` or `promtool` on PATH, else Debian's /usr/bin copy."""
    found = shutil.which(name)
    if found is None and Path(f"/usr/bin/{name}").exists():
        found = f"/usr/bin/{name}"
    return found


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrometheusServer:
    """`PrometheusServer(workdir, {"job": ["127.0.0.1:port"]}).start()`; `query(expr)` runs an instant query."""

    def __init__(
        self,
        workdir: Path,
        jobs: Mapping[str, list[str]],
        *,
        scrape_interval: str = "1s",
        rule_files: tuple[Path, ...] = (),
    ) -> None:
        found = binary("prometheus")
        if found is None:
            raise FileNotFoundError(INSTALL_HINT.format(binary="prometheus"))
        self.binary = found
        self.workdir = workdir
        self.port = _free_port()
        self.jobs = dict(jobs)
        self.scrape_interval = scrape_interval
        self.rule_files = rule_files
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in self.jobs.items()
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> PrometheusServer:
        argv = [
            self.binary,
            f"--config.file={self._config()}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus did not become ready on port {self.port}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query; raises with Prometheus's error for a bad query."""
        return list(self._api("query?" + urllib.parse.urlencode({"query": expr}))["result"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule as /api/v1/rules reports it (health, lastError, state)."""
        return [rule for group in self._api("rules")["groups"] for rule in group["rules"]]

    def _api(self, path: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read() or b"{}")
        if answer.get("status") != "success":
            raise QueryError(f"{answer.get('errorType')}: {answer.get('error')}")
        return dict(answer["data"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class QueryError(Exception):
    """Prometheus refused a query (parse or execution error)."""
