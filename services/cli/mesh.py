"""`llmmesh up`: the local mesh as separate processes on 127.0.0.1.

The mock adapter, the router and the agent always run; a real adapter runs
when its key variable is set. Adapters bind free ports; a static discovery
file written for this run tells the router where they are (and the agent
where the `tools` ToolServices are), or, with discovery "consul", the
adapters register in the Consul agent and the router and agent watch it.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmmesh.v1 import router_service_pb2, router_service_pb2_grpc
from services.common.otlp_receiver import OtlpReceiver
from services.common.processes import ServiceProcess, start_service

# An upper bound for one process to import and bind: generous, since a busy 2-core machine is slow to import.
_START_SECONDS = 90.0
# Short checks locally so `up` is usable within a second or two of starting.
_LOCAL_CONSUL_ENV = {"LLMMESH_CONSUL_CHECK_INTERVAL_SECONDS": "1", "LLMMESH_CONSUL_CHECK_TIMEOUT_SECONDS": "1"}

# Adapter kind → the key variables that enable it (any one of them).
ADAPTER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


def local_telemetry_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Children export to the local receiver, in small fast batches so traces show up at once."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # Locally every request is worth seeing; the 10% default is for production hot paths.
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_METRIC_EXPORT_INTERVAL": "10000",
    }


def adapters_to_run(environ: dict[str, str] | None = None) -> list[str]:
    """The mock, plus each built adapter whose key variable is set."""
    environ = dict(os.environ) if environ is None else environ
    kinds = ["mock"]
    for kind, keys in ADAPTER_KEYS.items():
        if any(environ.get(key) for key in keys) and importlib.util.find_spec(f"services.providers.{kind}") is not None:
            kinds.append(kind)
    return kinds


@dataclass
class LocalMesh:
    """Starts and stops the local mesh; usable as a context manager."""

    router_port: int = 50051
    agent_port: int = 50052
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmmesh-")))
    env: dict[str, str] = field(default_factory=dict)
    discovery: str = "static"
    consul_address: str = ""
    #: The router's OpenAI-compatible HTTP port (0: a free one); None leaves LLMMESH_HTTP_PORT as it is.
    http_port: int | None = None
    #: ToolService addresses the agent offers (static discovery as `llmmesh-tool`).
    tools: list[str] = field(default_factory=list)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def router_address(self) -> str:
        return self.processes["router"].address

    @property
    def agent_address(self) -> str:
        return self.processes["agent"].address

    @property
    def http_address(self) -> str | None:
        """The HTTP door's host:port when the router opened one."""
        port = self.processes["router"].ready.get("http_port")
        return f"127.0.0.1:{port}" if port else None

    def exited(self) -> ServiceProcess | None:
        """The first process that is no longer running, if any."""
        return next((p for p in self.processes.values() if p.process.poll() is not None), None)

    def start(self) -> None:
        try:
            discovery_env = self._discovery_env()
            for kind in adapters_to_run():
                self._start(f"provider-{kind}", f"services.providers.{kind}", discovery_env)
            if self.discovery == "static":
                discovery_env["LLMMESH_STATIC_DISCOVERY_FILE"] = str(self._write_static_file())
            router_env = {**discovery_env, "LLMMESH_PORT": str(self.router_port)}
            if self.http_port is not None:
                router_env["LLMMESH_HTTP_PORT"] = str(self.http_port)
            router = self._start("router", "services.router", router_env)
            # The agent calls the router like any other caller, and finds tools the way the router finds adapters.
            agent_env = {
                **discovery_env,
                "LLMMESH_PORT": str(self.agent_port),
                "LLMMESH_ROUTER_ADDRESS": router.address,
            }
            self._start("agent", "services.agent", agent_env)
            for process in self.processes.values():
                wait_until_serving(process.address)
            if self.discovery == "consul":
                # Consul starts every check critical: wait until the router has seen the mock pass.
                wait_until_routable(self.router_address, "mock-small")
        except BaseException:
            self.stop()
            raise

    def _discovery_env(self) -> dict[str, str]:
        env = {"LLMMESH_DISCOVERY": self.discovery}
        if self.discovery == "consul":
            env |= _LOCAL_CONSUL_ENV
            if self.consul_address:
                env["CONSUL_HTTP_ADDR"] = self.consul_address
        return env

    def _start(self, name: str, module: str, env: dict[str, str]) -> ServiceProcess:
        # Our settings win over the caller's environment (self.env): ports and discovery are the mesh's own.
        process = start_service(
            ["-m", module], name=name, env={**self.env, **env}, workdir=self.workdir, timeout=_START_SECONDS
        )
        self.processes[name] = process
        return process

    def _write_static_file(self) -> Path:
        services = {
            f"llmmesh-{name}": [process.address]
            for name, process in self.processes.items()
            if name.startswith("provider-")
        }
        if self.tools:
            services["llmmesh-tool"] = list(self.tools)
        path = self.workdir / "static-discovery.yaml"
        path.write_text(yaml.safe_dump({"services": services}))
        return path

    def stop(self) -> None:
        """SIGTERM everything, callers first: the agent, then the router, then the adapters."""
        order = {"agent": 0, "router": 1}
        for name in sorted(self.processes, key=lambda n: order.get(n, 2)):
            self.processes[name].terminate()

    def __enter__(self) -> LocalMesh:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_until_routable(router_address: str, model: str, timeout: float = 20.0) -> None:
    """Blocks until the router has a live instance for `model`, or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(router_address) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        while time.monotonic() < deadline:
            models = stub.ListModels(router_service_pb2.ListModelsRequest(), timeout=5).models
            if any(m.name == model and m.available for m in models):
                return
            time.sleep(0.1)
    raise TimeoutError(f"the router found no healthy instance for {model} in Consul within {timeout:.0f}s")


def wait_until_serving(address: str, timeout: float = 15.0) -> None:
    """Blocks until grpc.health.v1 says SERVING, or raises TimeoutError."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True)
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise TimeoutError(f"{address} is {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
