"""The production-shaped mesh: the prod overlay's settings, every security and resilience feature on at once.

`ProductionMesh` renders deploy/k8s/overlays/prod with the pinned kubectl
(as `make k8s-check` does), reads each Deployment's container environment
and starts every process on 127.0.0.1 with it. Only what cannot be the same
on one machine is substituted (SUBSTITUTED below: addresses, ports, the
files of Secret and ConfigMap volumes, the Secrets' values, downward-API
fields); every other value is the manifests' own, except the few in
OVERRIDES and ADDED, each with its reason. A variable the substitution does
not know, an address or mount path left unsubstituted, or an override whose
variable the manifests no longer set fails the start: manifests and tests
cannot drift apart silently.

What runs: the Consul double (ACL tokens per component, gRPC checks over TLS
with the agent's own certificate), a real redis-server with a password for
the quotas, the OTLP receiver, two instances of each adapter kind (mock,
and openai, anthropic, google on their SDKs against the loopback fakes), two
routers behind a TCP balancer standing in for the ClusterIP Service (each
with the HTTP door), the example ToolService and the agent. Caller auth
with two tenants, the internal token and mTLS on every gRPC hop. The test
process owns the fakes: tests script them (`openai`, `anthropic`, `google`).

The prod overlay deploys no mock and no ToolService: both run with the prod
adapter Deployment's environment (their own name, token and files), and the
routing file is the prod ConfigMap's plus the mock models (ROUTING_ADDITIONS).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import yaml

from llmmesh.v1 import router_service_pb2, router_service_pb2_grpc
from services.common import telemetry_names as names
from services.common.otlp_receiver import OtlpReceiver
from services.common.processes import ServiceProcess, start_service
from services.common.tenants import hash_api_key
from services.deploy.render import render
from services.testing.fake_anthropic import FakeAnthropic
from services.testing.fake_consul import AclRules, AgentCheckTLS, FakeConsul
from services.testing.fake_google import FakeGemini
from services.testing.fake_openai import FakeOpenAI
from services.testing.pki import CertificateAuthority
from services.testing.redis_server import RedisServer
from services.testing.tcp_balancer import TcpBalancer

REPO = Path(__file__).resolve().parents[2]
PROD_OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "prod"
# Upper bound for one process to import and bind while eleven others do the same on a busy 2-core machine.
START_SECONDS = 150.0
KINDS = ("mock", "openai", "anthropic", "google")
INSTANCES = 2
ROUTERS = 2


@dataclass(frozen=True)
class Override:
    value: str
    reason: str


# Values the suite changes, each with why. Keep this short: every entry is a way tests and prod differ.
OVERRIDES: dict[str, Override] = {
    "LLMMESH_CONSUL_CHECK_INTERVAL_SECONDS": Override(
        "1", "prod checks every 10 s; the suite waits for instances to pass after each (re)start"
    ),
    "LLMMESH_CONSUL_ANTI_ENTROPY_SECONDS": Override(
        "1", "prod re-registers within 10 s of losing the agent's state; the suite restarts Consul and waits"
    ),
    "LLMMESH_CONSUL_BACKOFF_MAX_SECONDS": Override(
        "1", "prod's 10 s cap would make the watchers' return after a Consul restart dominate the suite"
    ),
    "LLMMESH_ROUTER_REPLICAS": Override("2", "the topology runs two router replicas, not prod's three"),
    "LLMMESH_HTTP_PORT": Override("0", "prod leaves the HTTP door off; the suite tests it (0: a free port)"),
    "LLMMESH_PROMETHEUS_PORT": Override(
        "", "every process would bind prod's 9464 on one host; the suite reads metrics from its OTLP receiver"
    ),
}
# Variables prod leaves to their defaults that the suite sets.
ADDED: dict[str, Override] = {
    "OTEL_METRIC_EXPORT_INTERVAL": Override(
        "1000", "breaker gauges are read from the OTLP receiver; the SDK's 60 s default is too slow to wait for"
    ),
}
# What is replaced, by variable (the rest: Secret values, volume files, downward-API fields).
SUBSTITUTED = (
    "LLMMESH_HOST",
    "LLMMESH_PORT",
    "CONSUL_HTTP_ADDR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LLMMESH_ROUTER_ADDRESS",
    "LLMMESH_QUOTA_REDIS_URL",
    "LLMMESH_OPENAI_BASE_URL",
    "LLMMESH_ANTHROPIC_BASE_URL",
    "LLMMESH_GOOGLE_BASE_URL",
)
_FIELDS = {"status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1"}
_DEPENDENT = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_CLUSTER_ADDRESS = re.compile(r"\.svc\b|\.cluster\.local\b|^[a-z][a-z0-9-]*:\d+$|://(?!127\.0\.0\.1[:/])")

# Test-only processes: what they take from the prod adapter Deployment, and what they set themselves.
ADAPTER_TEMPLATE = "llmmesh-provider-openai"
_PROVIDER_SPECIFIC = ("LLMMESH_OPENAI_", "OPENAI_")
MOCK_MODELS: list[dict[str, Any]] = [
    {"name": "mock-small", "context_window": 8192},
    # Streams a word every 100 ms: streams stay in flight while a test signals or cancels.
    {"name": "mock-slow", "context_window": 8192, "stream_chunk_delay_ms": 100},
]
ROUTING_ADDITIONS: dict[str, Any] = {
    "providers": {"mock": {"kind": "mock"}},
    "models": {model["name"]: {"provider": "mock", "context_window": model["context_window"]} for model in MOCK_MODELS},
}
TOOL_NAME = "llmmesh-tool"


class TopologyDriftError(RuntimeError):
    """The rendered manifests set something the topology does not know how to run on one machine."""


@dataclass(frozen=True)
class Container:
    """One rendered Deployment's llmmesh container: env entries and where its volumes are mounted."""

    deployment: str
    env: list[dict[str, Any]]
    mounts: dict[str, dict[str, Any]]  # mountPath → the volume's source (secret / configMap)


def rendered_containers(overlay: Path = PROD_OVERLAY) -> tuple[dict[str, Container], dict[str, dict[str, str]]]:
    """Deployment name → its container; ConfigMap name → its data."""
    objects = render(overlay)
    configmaps = {o["metadata"]["name"]: dict(o.get("data") or {}) for o in objects if o["kind"] == "ConfigMap"}
    found: dict[str, Container] = {}
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        spec = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        container = next(c for c in spec["containers"] if c["name"] == "llmmesh")
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}
        found[obj["metadata"]["name"]] = Container(obj["metadata"]["name"], list(container.get("env") or []), mounts)
    return found, configmaps


@dataclass
class Secrets:
    """Every Secret the overlay references, made up for this run; `values()` is what no log may contain."""

    data: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def value(self, name: str, key: str) -> str:
        try:
            return self.data[name][key]
        except KeyError:
            raise TopologyDriftError(
                f"the prod overlay reads key {key!r} of Secret {name!r}, which ProductionMesh does not make: add it"
            ) from None

    def values(self) -> dict[str, str]:
        """`secret/key` → value, for the secrets that are strings (tokens, keys, passwords)."""
        return {f"{name}/{key}": value for name, keys in self.data.items() for key, value in keys.items() if value}


def _token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


class _BalancerThread:
    """TcpBalancer (the ClusterIP stand-in) on its own event loop, for sync callers."""

    def __init__(self, backends: list[str]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="prod-balancer", daemon=True)
        self._thread.start()
        self.balancer = TcpBalancer(backends)
        asyncio.run_coroutine_threadsafe(self.balancer.__aenter__(), self._loop).result(10)

    @property
    def address(self) -> str:
        return self.balancer.address

    def set_backends(self, backends: list[str]) -> None:
        self._loop.call_soon_threadsafe(self.balancer.set_backends, backends)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.balancer.__aexit__(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class ProductionMesh:
    """`with ProductionMesh() as mesh:`; see the module docstring for what runs."""

    def __init__(self, workdir: Path | None = None, *, overlay: Path = PROD_OVERLAY) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="llmmesh-prod-"))
        self.overlay = overlay
        self.secrets = Secrets()
        self.tenant_keys = {"team-a": _token("llmk_team-a"), "team-b": _token("llmk_team-b")}
        self.processes: dict[str, ServiceProcess] = {}
        # Processes a test stopped on purpose (and has not restarted yet): not a failure.
        self.stopped: set[str] = set()
        self._started: list[Callable[[], None]] = []  # stop callbacks, in start order
        self.containers: dict[str, Container] = {}
        self.configmaps: dict[str, dict[str, str]] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ProductionMesh:
        try:
            self.containers, self.configmaps = rendered_containers(self.overlay)
            _check_overrides(self.containers)
            self._make_secrets()
            self._start_backing_services()
            self._start_mesh_processes()
            self.wait_until_routable()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every mesh process at once (each drains in parallel), then the backing services."""
        with concurrent.futures.ThreadPoolExecutor(max(len(self.processes), 1)) as pool:
            list(pool.map(lambda process: process.terminate(), self.processes.values()))
        for stop in reversed(self._started):
            stop()
        self._started.clear()

    def __enter__(self) -> ProductionMesh:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _make_secrets(self) -> None:
        ca = CertificateAuthority(self.workdir, "llmmesh-mesh-ca")
        consul_ca = CertificateAuthority(self.workdir, "consul-agent-ca")
        self.ca_file = ca.ca_file
        tls = {name: ca.issue(name) for name in ("llmmesh-router", "llmmesh-agent", "llmmesh-provider", TOOL_NAME)}
        for name, pair in tls.items():
            secret = f"{name}-tls"
            self.secrets.files[secret] = {
                "tls.crt": pair.cert.read_bytes(),
                "tls.key": pair.key.read_bytes(),
                "ca.crt": ca.ca_file.read_bytes(),
            }
        agent_pair = consul_ca.issue("client.dc1.consul")
        bundle = self.workdir / "consul-agent-trust.pem"
        bundle.write_bytes(consul_ca.ca_file.read_bytes() + ca.ca_file.read_bytes())
        self.consul_check_tls = AgentCheckTLS(str(bundle), str(agent_pair.cert), str(agent_pair.key))
        self.secrets.files["llmmesh-consul-agent-ca"] = {"ca.crt": consul_ca.ca_file.read_bytes()}
        self.secrets.files["llmmesh-tenants"] = {"tenants.yaml": self._tenants_yaml().encode()}
        data = self.secrets.data
        data["llmmesh-internal"] = {"token": _token("internal")}
        data["llmmesh-quota-redis"] = {"password": _token("redis")}
        data["llmmesh-agent-router-key"] = {"key": self.tenant_keys["team-b"]}
        for kind in ("openai", "anthropic", "google"):
            data[f"llmmesh-provider-{kind}"] = {"api-key": _token(f"sk-{kind}")}
        for component in ("router", "agent", *(f"provider-{kind}" for kind in KINDS), "tool"):
            data[f"llmmesh-consul-{component}"] = {"token": _token(f"consul-{component}")}

    def _tenants_yaml(self) -> str:
        # Generous limits: quotas are counted in redis on every call, but no case should hit them.
        tenants = [
            {
                "name": name,
                "keys": [{"id": f"{name}-0", "sha256": hash_api_key(key)}],
                "allowed_models": ["*"],
                "limits": {"requests_per_minute": 100_000, "tokens_per_minute": 100_000_000},
            }
            for name, key in self.tenant_keys.items()
        ]
        return yaml.safe_dump({"tenants": tenants})

    def _consul_acls(self) -> dict[str, AclRules]:
        """The ACL policy the README documents: register its own name; watch with service:read and node:read."""
        token = lambda component: self.secrets.value(f"llmmesh-consul-{component}", "token")  # noqa: E731
        rules = {
            token("router"): AclRules(service_read=("llmmesh-provider-",), node_read=True),
            token("agent"): AclRules(service_read=(TOOL_NAME,), node_read=True),
            token("tool"): AclRules(service_write=(TOOL_NAME,)),
        }
        for kind in KINDS:
            rules[token(f"provider-{kind}")] = AclRules(service_write=(f"llmmesh-provider-{kind}",))
        return rules

    def _start_backing_services(self) -> None:
        self.redis = RedisServer(self.workdir, password=self.secrets.value("llmmesh-quota-redis", "password")).start()
        self._started.append(self.redis.stop)
        self.receiver = OtlpReceiver().start()
        self._started.append(self.receiver.stop)
        self.consul = FakeConsul(acl_tokens=self._consul_acls(), check_tls=self.consul_check_tls).start()
        self._started.append(self.consul.stop)
        keys = self.secrets.data
        self.openai = FakeOpenAI(expected_key=keys["llmmesh-provider-openai"]["api-key"]).start()
        self.anthropic = FakeAnthropic(api_key=keys["llmmesh-provider-anthropic"]["api-key"]).start()
        self.google = FakeGemini(api_key=keys["llmmesh-provider-google"]["api-key"]).start()
        self._started += [self.openai.stop, self.anthropic.stop, self.google.stop]
        self.balancer = _BalancerThread([])
        self._started.append(self.balancer.stop)

    # -- processes --------------------------------------------------------------------------

    def _start_mesh_processes(self) -> None:
        specs = [(f"router-{i}", "services.router", self._env("llmmesh-router", f"router-{i}")) for i in range(ROUTERS)]
        for kind in KINDS:
            for index in range(INSTANCES):
                name = f"{kind}-{index}"
                specs.append((name, f"services.providers.{kind}", self._adapter_env(kind, name)))
        specs.append(("tool-0", "services.agent.example_tools", self._tool_env()))
        self._start_all(specs)
        self.balancer.set_backends([self.processes[f"router-{i}"].address for i in range(ROUTERS)])
        self._start_all([("agent", "services.agent", self._env("llmmesh-agent", "agent"))])

    def _start_all(self, specs: list[tuple[str, str, dict[str, str]]]) -> None:
        with concurrent.futures.ThreadPoolExecutor(len(specs)) as pool:
            futures = {name: pool.submit(self._start_one, name, module, env) for name, module, env in specs}
            errors = []
            for name, future in futures.items():
                try:
                    self.processes[name] = future.result()
                except Exception as error:  # noqa: BLE001 - collected, the first is raised below
                    errors.append(error)
        if errors:
            raise errors[0]

    def _start_one(self, name: str, module: str, env: dict[str, str]) -> ServiceProcess:
        return start_service(["-m", module], name=name, env=_isolated(env), workdir=self.workdir, timeout=START_SECONDS)

    def restart(self, name: str, *, same_port: bool = True) -> ServiceProcess:
        """Starts `name` again with its environment (on its old port: a container restarted in place)."""
        old = self.processes[name]
        env = {key: value for key, value in old.env.items() if key != "LLMMESH_READY_FILE"}
        if same_port:
            env["LLMMESH_PORT"] = str(old.port)
        process = self._start_one(name, _module_of(name), env)
        self.processes[name] = process
        self.stopped.discard(name)
        if name.startswith("router-"):
            self.balancer.set_backends([a for r, a in self._router_items() if r not in self.stopped])
        return process

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Signals `name` and marks it stopped on purpose; SIGKILL waits for it to be gone."""
        self.stopped.add(name)
        if name.startswith("router-"):
            # Kubernetes takes a terminating pod out of the Service's endpoints: new connections go elsewhere.
            self.balancer.set_backends([a for r, a in self._router_items() if r not in self.stopped])
        process = self.processes[name]
        process.signal(signum)
        if signum == signal.SIGKILL:
            process.process.wait(10)

    # -- environments -----------------------------------------------------------------------

    def _env(self, deployment: str, pod: str) -> dict[str, str]:
        """The rendered container's env with SUBSTITUTED, OVERRIDES and ADDED applied."""
        container = self._container(deployment)
        env = self._resolve(container, pod)
        for name, override in OVERRIDES.items():
            if name in env:
                env[name] = override.value
        env |= {name: added.value for name, added in ADDED.items()}
        _check_substituted(deployment, env)
        return env

    def _container(self, deployment: str) -> Container:
        if deployment not in self.containers:
            raise TopologyDriftError(f"the prod overlay renders no Deployment {deployment!r}")
        return self.containers[deployment]

    def _resolve(self, container: Container, pod: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for entry in container.env:
            name = entry["name"]
            if "valueFrom" in entry:
                env[name] = self._value_from(entry["valueFrom"], pod, container.deployment)
            else:
                value = _DEPENDENT.sub(lambda m: env.get(m.group(1), m.group(0)), str(entry.get("value", "")))
                env[name] = self._substitute(name, value, container, pod)
        return env

    def _value_from(self, source: dict[str, Any], pod: str, deployment: str) -> str:
        if "secretKeyRef" in source:
            return self.secrets.value(source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        path = (source.get("fieldRef") or {}).get("fieldPath", "")
        if path == "metadata.name":
            return f"{deployment}-{pod}"
        if path in _FIELDS:
            return _FIELDS[path]
        raise TopologyDriftError(f"{deployment}: valueFrom {source} is not one ProductionMesh can fill in")

    def _substitute(self, name: str, value: str, container: Container, pod: str) -> str:
        if name in SUBSTITUTED:
            return self._address(name, value)
        for mount, volume in container.mounts.items():
            if value.startswith(mount.rstrip("/") + "/"):
                return str(self._volume_dir(volume) / value[len(mount.rstrip("/")) + 1 :])
        return value

    def _address(self, name: str, value: str) -> str:
        if name == "LLMMESH_HOST":
            return "127.0.0.1"
        if name == "LLMMESH_PORT":
            return "0"
        if name == "LLMMESH_ROUTER_ADDRESS":
            return self.balancer.address
        targets = {
            "CONSUL_HTTP_ADDR": self.consul.address,
            "OTEL_EXPORTER_OTLP_ENDPOINT": urlsplit(self.receiver.endpoint).netloc,
            "LLMMESH_QUOTA_REDIS_URL": f"127.0.0.1:{self.redis.port}",
            "LLMMESH_OPENAI_BASE_URL": urlsplit(self.openai.url).netloc,
            "LLMMESH_ANTHROPIC_BASE_URL": urlsplit(self.anthropic.url).netloc,
            "LLMMESH_GOOGLE_BASE_URL": urlsplit(self.google.url).netloc,
        }
        if not value:  # prod leaves it to the SDK's default: the loopback fake has its own path
            return {"LLMMESH_OPENAI_BASE_URL": self.openai.url, "LLMMESH_ANTHROPIC_BASE_URL": self.anthropic.url}[name]
        parts = urlsplit(value)
        # Kept: the scheme and path prod uses (http://$(HOST_IP):8500, redis://host:6379/0); replaced: host:port.
        return urlunsplit(("http" if parts.scheme == "https" else parts.scheme, targets[name], *parts[2:]))

    def _volume_dir(self, volume: dict[str, Any]) -> Path:
        """The files a Secret or ConfigMap volume would mount, written under workdir/volumes/<name>."""
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            data = self.secrets.files.get(name)
            if data is None:
                raise TopologyDriftError(f"the prod overlay mounts Secret {name!r}, which ProductionMesh does not make")
        elif "configMap" in volume:
            name = volume["configMap"]["name"]
            data = {key: self._configmap_file(name, key, text).encode() for key, text in self.configmaps[name].items()}
        else:
            return self.workdir / "volumes" / volume["name"]  # emptyDir
        items = volume.get("secret", volume.get("configMap", {})).get("items")
        mapping = {item["key"]: item["path"] for item in items} if items else {key: key for key in data}
        directory = self.workdir / "volumes" / name
        directory.mkdir(parents=True, exist_ok=True)
        for key, path in mapping.items():
            (directory / path).write_bytes(data[key])
        return directory

    def _configmap_file(self, configmap: str, key: str, text: str) -> str:
        if key != "routing.yaml":
            return text
        routing = yaml.safe_load(text)
        for section, entries in ROUTING_ADDITIONS.items():
            routing.setdefault(section, {}).update(entries)
        return yaml.safe_dump(routing, sort_keys=False)

    def _adapter_env(self, kind: str, pod: str) -> dict[str, str]:
        if kind != "mock":
            return self._env(f"llmmesh-provider-{kind}", pod)
        env = self._from_adapter_template(pod)
        mock_file = self.workdir / "mock.yaml"
        mock_file.write_text(yaml.safe_dump({"models": MOCK_MODELS}))
        env |= {
            "LLMMESH_PROVIDER_INSTANCE": "mock",
            "OTEL_SERVICE_NAME": "llmmesh-provider-mock",
            "LLMMESH_POD_NAME": f"llmmesh-provider-mock-{pod}",
            "CONSUL_HTTP_TOKEN": self.secrets.value("llmmesh-consul-provider-mock", "token"),
            "LLMMESH_MOCK_CONFIG": str(mock_file),
        }
        return env

    def _tool_env(self) -> dict[str, str]:
        """The example ToolService: the adapter template's service, TLS and Consul settings, its own identity."""
        env = self._from_adapter_template("tool-0")
        for name in ("LLMMESH_INTERNAL_TOKEN", "LLMMESH_INTERNAL_ALLOWED_CLIENTS", "LLMMESH_PROVIDER_INSTANCE"):
            env.pop(name, None)
        tls = self._volume_dir({"name": "tls", "secret": {"secretName": f"{TOOL_NAME}-tls"}})
        env |= {
            "OTEL_SERVICE_NAME": TOOL_NAME,
            "LLMMESH_POD_NAME": f"{TOOL_NAME}-0",
            "CONSUL_HTTP_TOKEN": self.secrets.value("llmmesh-consul-tool", "token"),
            "LLMMESH_TLS_CERT_FILE": str(tls / "tls.crt"),
            "LLMMESH_TLS_KEY_FILE": str(tls / "tls.key"),
            "LLMMESH_CONSUL_CHECK_TLS_SERVER_NAME": TOOL_NAME,
            "LLMMESH_TOOL_ALLOWED_CLIENTS": "llmmesh-agent",
        }
        return env

    def _from_adapter_template(self, pod: str) -> dict[str, str]:
        env = self._env(ADAPTER_TEMPLATE, pod)
        return {name: value for name, value in env.items() if not name.startswith(_PROVIDER_SPECIFIC)}

    # -- readiness and observation ----------------------------------------------------------

    def wait_until_routable(self, timeout: float = 90.0) -> None:
        """Both instances of every kind pass in Consul and both routers offer every model."""
        deadline = time.monotonic() + timeout
        services = [f"llmmesh-provider-{kind}" for kind in KINDS]
        wanted = dict.fromkeys(services, INSTANCES) | {TOOL_NAME: 1}
        while any(len(self.consul.service_ids(name, passing=True)) < count for name, count in wanted.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every instance passes in Consul: {self._consul_summary(wanted)}")
            time.sleep(0.2)
        for address in self.router_addresses():
            self._wait_models_available(address, deadline)

    def _consul_summary(self, wanted: dict[str, int]) -> dict[str, int]:
        return {name: len(self.consul.service_ids(name, passing=True)) for name in wanted}

    def _wait_models_available(self, address: str, deadline: float) -> None:
        with self.channel(address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            while True:
                models = stub.ListModels(
                    router_service_pb2.ListModelsRequest(), timeout=10, metadata=self.caller("team-a")
                ).models
                missing = sorted(m.name for m in models if not m.available)
                if not missing:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"router {address} has no instance for {missing}")
                time.sleep(0.2)

    def router_addresses(self) -> list[str]:
        return [address for _, address in self._router_items()]

    def _router_items(self) -> list[tuple[str, str]]:
        return [(f"router-{i}", self.processes[f"router-{i}"].address) for i in range(ROUTERS)]

    @property
    def router_address(self) -> str:
        """The Service address: the balancer in front of both routers."""
        return self.balancer.address

    @property
    def agent_address(self) -> str:
        return self.processes["agent"].address

    def http_url(self, router: int = 0) -> str:
        return f"http://127.0.0.1:{self.processes[f'router-{router}'].ready['http_port']}"

    def credentials(self) -> grpc.ChannelCredentials:
        """What a caller inside the cluster has: the mesh CA (routers and the agent do not ask for client certs)."""
        return grpc.ssl_channel_credentials(self.ca_file.read_bytes())

    def channel(self, address: str | None = None) -> grpc.Channel:
        return grpc.secure_channel(address or self.router_address, self.credentials())

    def aio_channel(self, address: str | None = None) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(address or self.router_address, self.credentials())

    def caller(self, tenant: str = "team-a") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tenant_keys[tenant]}"),)

    def secret_values(self) -> dict[str, str]:
        """Every secret a process holds: the Secrets' values and the tenants' keys."""
        return self.secrets.values() | {f"tenant key {name}": key for name, key in self.tenant_keys.items()}

    def leaked_secrets(self) -> list[str]:
        """`<process>: <secret>` for every secret value that appears in a process's log."""
        found = []
        for name, process in self.processes.items():
            log = process.log()
            found += [f"{name}: {secret}" for secret, value in self.secret_values().items() if value in log]
        return found

    def error_lines(self) -> list[str]:
        """`<process>: <line>` for every log line at level error or critical (the processes log JSON)."""
        return [
            f"{name}: {line}"
            for name, log in self.logs()
            for line in log.splitlines()
            if '"level": "error"' in line or '"level": "critical"' in line
        ]

    def unexpected_exits(self) -> list[str]:
        return [
            f"{name} exited with {process.process.returncode}: {process.last_log_line()}"
            for name, process in self.processes.items()
            if name not in self.stopped and process.process.poll() is not None
        ]

    def breaker_states(self, since_ns: int) -> dict[tuple[str, str], float]:
        """(router instance, breaker) → its newest gauge value exported after `since_ns` (0 closed, 2 open)."""
        newest: dict[tuple[str, str], tuple[int, float]] = {}
        for point in self.receiver.metric_points(names.METRIC_ROUTER_BREAKER_STATE, "llmmesh-router"):
            key = (point.instance, _breaker_name(point.attributes))
            if point.time_ns >= since_ns and point.time_ns >= newest.get(key, (0, 0.0))[0]:
                newest[key] = (point.time_ns, point.value)
        return {key: value for key, (_, value) in newest.items()}

    def routers_exported_since(self, since_ns: int) -> set[str]:
        """The router instances that exported any metric after `since_ns`."""
        return {
            point.instance
            for point in self.receiver.metric_points(service="llmmesh-router")
            if point.time_ns >= since_ns
        }

    def logs(self) -> Iterator[tuple[str, str]]:
        for name, process in self.processes.items():
            yield name, process.log()


def _isolated(env: dict[str, str]) -> dict[str, str]:
    """`env` with every setting of the caller's own environment that it does not set blanked (keys included)."""
    inherited = {
        name: ""
        for name in os.environ
        if name.startswith(("LLMMESH_", "OTEL_", "CONSUL_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_"))
    }
    return inherited | env


def _module_of(name: str) -> str:
    kind = name.rsplit("-", 1)[0]
    if kind == "router":
        return "services.router"
    if kind == "tool":
        return "services.agent.example_tools"
    if kind == "agent":
        return "services.agent"
    return f"services.providers.{kind}"


def _check_overrides(containers: dict[str, Container]) -> None:
    """Each override must still name a variable some rendered container sets (else it overrides nothing)."""
    rendered = {entry["name"] for container in containers.values() for entry in container.env}
    stale = sorted(set(OVERRIDES) - rendered)
    if stale:
        raise TopologyDriftError(f"OVERRIDES names variables the prod overlay no longer sets: {stale}")
    already = sorted(set(ADDED) & rendered)
    if already:
        raise TopologyDriftError(f"ADDED names variables the prod overlay now sets (make them OVERRIDES): {already}")


def _check_substituted(deployment: str, env: dict[str, str]) -> None:
    """No cluster address, unexpanded $(VAR) or container path may reach a process on this machine."""
    for name, value in env.items():
        if _DEPENDENT.search(value) or value.startswith("/etc/") or _CLUSTER_ADDRESS.search(value):
            raise TopologyDriftError(
                f"{deployment}: {name}={value!r} still points into the cluster: "
                "add it to SUBSTITUTED (an address), mount it from a volume (a path), or to OVERRIDES"
            )


def _breaker_name(labels: Mapping[str, object]) -> str:
    """The gauge's scope, provider and model labels as BreakerRegistry names them (`provider openai`, `openai/gpt-4o`)."""
    provider = labels.get(names.GEN_AI_PROVIDER_NAME)
    if labels.get(names.BREAKER_SCOPE) == "provider":
        return f"provider {provider}"
    return f"{provider}/{labels.get(names.GEN_AI_REQUEST_MODEL)}"
