"""A faithful loopback double of the Consul agent HTTP API, for discovery tests.

A real HTTP/1.1 server (stdlib ThreadingHTTPServer on 127.0.0.1, port 0 by
default) answering the endpoints llmmesh uses the way a Consul agent does:

- PUT /v1/agent/service/register: JSON keys in any case and in snake_case
  (py-consul sends `name`, `checks`, `grpc`, `grpc_use_tls`,
  `DeregisterCriticalServiceAfter`); a missing name, a bad duration or Meta
  past Consul's limits (64 pairs, keys of 1-128 `[A-Za-z0-9_-]` not starting
  `consul-`, values of at most 512 bytes) is a 400.
- PUT /v1/agent/service/deregister/<id>: 404 for an unknown ID.
- GET /v1/agent/service/<id>: the agent's view of one instance, 404 when unknown.
- GET /v1/agent/services: every instance this agent registered, by ID.
- GET /v1/health/service/<name>[?passing][&tag=][&index=&wait=]: Node /
  Service / Checks entries; `passing` leaves out entries with any warning or
  critical check; blocking queries really block until the service's index
  moves past `index` or `wait` (default 5m, max 10m, plus up to wait/16 of
  jitter) elapses; X-Consul-Index on every answer, never 0.
- GET /v1/status/leader.

Checks are real: each GRPC check calls grpc.health.v1 Check on the address
it was given, every `Interval` (first run after a random stagger, like
Consul), on a new connection each time, with its `Timeout`; a check starts
critical (or at its `Status`). `GRPCUseTLS` checks dial TLS like Consul's
(agent/checks/grpc.go with tlsutil's OutgoingTLSConfigForCheck): without
`check_tls` (Consul's `enable_agent_tls_for_checks` off) against the default
roots and with no client certificate; with it, against its CA, presenting
its certificate; `TLSServerName` replaces the dialled host in verification;
`TLSSkipVerify` accepts whatever certificate the server presents.
DeregisterCriticalServiceAfter is honoured by a reaper. Consul's own floors
apply by default (check interval at least 1 s, deregister-after at least
1 min, reaper every 30 s); tests lower them through the constructor
(`min_check_interval`, `min_deregister_after`, `reap_interval`), the one
deliberate difference from a real agent.

ACLs (`acl_tokens`, token → `AclRules`; `required_token` is one token with
every right): writes without `service:write` are a 403; reads drop what the
token may not read, as Consul's aclFilter does (a health entry needs
`node:read` and `service:read`), and say so only in the
X-Consul-Results-Filtered-By-ACLs header, sent only to a request with a
token; an unknown token is a 403 "ACL not found".

Test controls: `stop()` / `start()` (a restart forgets every service and
starts its indexes again, like a `consul agent -dev`), `fail_next(...)` for
HTTP errors, garbage JSON or dropped connections, `inject_entry(...)` for a
health entry a real agent would never return, `register_raw(...)` for an
entry left by another process.

Run it on its own for `llmmesh up --discovery consul` without a Consul binary:
`python -m services.testing.fake_consul --port 8500`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import signal
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
_MAX_WAIT_SECONDS = 600.0
_DEFAULT_WAIT_SECONDS = 300.0
_DEFAULT_CHECK_TIMEOUT_SECONDS = 10.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# agent/structs: validateMetaPair and ValidateServiceMetadata (lengths are Go's len: bytes).
_META_MAX_PAIRS = 64
_META_KEY_MAX_LENGTH = 128
_META_VALUE_MAX_LENGTH = 512
_META_KEY_FORMAT = re.compile(r"^[a-zA-Z0-9_-]+$")
_META_RESERVED_PREFIX = "consul-"
ACL_FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


@dataclass(frozen=True)
class AgentCheckTLS:
    """The agent's own TLS files used for checks: Consul's `enable_agent_tls_for_checks = true`."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class AclRules:
    """What one token may do: service prefixes it may read or write, and node:read on every node."""

    service_read: tuple[str, ...] = ()
    service_write: tuple[str, ...] = ()
    node_read: bool = False

    @classmethod
    def everything(cls) -> AclRules:
        return cls(service_read=("",), service_write=("",), node_read=True)

    def may_read_service(self, name: str) -> bool:
        # A write rule grants read too.
        return any(name.startswith(prefix) for prefix in (*self.service_read, *self.service_write))

    def may_write_service(self, name: str) -> bool:
        return any(name.startswith(prefix) for prefix in self.service_write)


class PermissionDeniedError(Exception):
    """Becomes a 403, worded like Consul's."""


class BadRequestError(Exception):
    """Becomes a 400 with this message, as Consul words its validation errors."""


def parse_duration(text: Any, field_name: str) -> float:
    """A Go duration string ("200ms", "1m30s") or a number of nanoseconds, in seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text) / 1e9
    if not isinstance(text, str):
        raise BadRequestError(f"Request decode failed: {field_name}: invalid duration {text!r}")
    if text in ("0", ""):
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise BadRequestError(f'Request decode failed: time: invalid duration "{text}"')
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _fields(obj: Any, what: str) -> dict[str, Any]:
    """Struct keys the way Consul decodes them: any case, with or without underscores."""
    if not isinstance(obj, dict):
        raise BadRequestError(f"Request decode failed: {what} must be an object")
    return {key.replace("_", "").replace("-", "").lower(): value for key, value in obj.items()}


@dataclass
class Fault:
    """One injected misbehaviour for the next request whose path starts with `path_prefix`."""

    path_prefix: str = "/v1/health/service/"
    status: int = 500
    body: bytes = b"rpc error making call: No cluster leader"
    #: Close the connection without an answer.
    drop: bool = False


@dataclass
class _Check:
    check_id: str
    name: str
    service_id: str
    service_name: str
    grpc_target: str
    grpc_service: str
    interval: float
    timeout: float
    deregister_after: float
    use_tls: bool = False
    tls_server_name: str = ""
    tls_skip_verify: bool = False
    status: str = CRITICAL
    output: str = ""
    critical_since: float = field(default_factory=time.monotonic)
    create_index: int = 0
    modify_index: int = 0

    def as_json(self, node: str) -> dict[str, Any]:
        return {
            "Node": node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": "",
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": [],
            "Type": "grpc",
            "Interval": f"{self.interval}s",
            "Timeout": f"{self.timeout}s",
            "Definition": {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class _Service:
    service_id: str
    name: str
    address: str
    port: int
    tags: list[str]
    meta: dict[str, str]
    checks: list[_Check]
    create_index: int
    modify_index: int

    def as_json(self, datacenter: str) -> dict[str, Any]:
        return {
            "ID": self.service_id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "Meta": dict(self.meta),
            "Port": self.port,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
            "Datacenter": datacenter,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


class _State:
    """One agent lifetime: what a restart forgets."""

    def __init__(self) -> None:
        self.index = 1
        self.services: dict[str, _Service] = {}
        self.service_index: dict[str, int] = {}
        self.injected: dict[str, list[dict[str, Any]]] = {}
        self.stopping = threading.Event()

    def bump(self, service_name: str) -> int:
        self.index += 1
        self.service_index[service_name] = self.index
        return self.index

    def index_of(self, service_name: str) -> int:
        return self.service_index.get(service_name, 1)


class FakeConsul:
    """The double: start(), point CONSUL_HTTP_ADDR at `address`, stop()."""

    datacenter = "dc1"
    node = "fake-consul-node"

    def __init__(
        self,
        *,
        port: int = 0,
        node_address: str = "127.0.0.1",
        min_check_interval: float = 1.0,
        min_deregister_after: float = 60.0,
        reap_interval: float = 30.0,
        required_token: str | None = None,
        acl_tokens: dict[str, AclRules] | None = None,
        check_tls: AgentCheckTLS | None = None,
    ) -> None:
        self.node_address = node_address
        self.min_check_interval = min_check_interval
        self.min_deregister_after = min_deregister_after
        self.reap_interval = reap_interval
        self.acl_tokens: dict[str, AclRules] | None = dict(acl_tokens or {}) or None
        if required_token is not None:
            self.acl_tokens = {**(self.acl_tokens or {}), required_token: AclRules.everything()}
        self.check_tls = check_tls
        self.requests: list[tuple[str, str, bool]] = []  # method, path, whether a token came with it
        self._port = port
        self._lock = threading.Condition()
        self._state = _State()
        self._faults: deque[Fault] = deque()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeConsul:
        """Starts serving (on the same port as before after a stop); the state starts empty."""
        fake = self

        class _Handler(_ConsulHandler):
            consul = fake

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: Any, client_address: Any) -> None:
                with fake._lock:
                    fake._connections.add(request)
                super().process_request(request, client_address)

            def handle_error(self, request: Any, client_address: Any) -> None:
                """Quiet: a client going away mid-answer is normal here (cut queries, drop faults)."""

            def shutdown_request(self, request: Any) -> None:
                with fake._lock:
                    fake._connections.discard(request)
                super().shutdown_request(request)

        with self._lock:
            self._state = _State()
        self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._port = self._server.server_address[1]
        server = self._server
        self._spawn(lambda: server.serve_forever(poll_interval=0.05), "fake-consul-http")
        self._spawn(self._reap, "fake-consul-reaper", self._state)
        return self

    def stop(self) -> None:
        """Stops like a killed agent: open connections (blocking queries too) are cut, checks stop, state is lost."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._lock:
            self._state.stopping.set()
            self._lock.notify_all()
            connections = list(self._connections)
            self._connections.clear()
        server.shutdown()
        server.server_close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        # Check threads may sit in a health call until its timeout; they exit on their own after it.
        deadline = time.monotonic() + 2.0
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        self._threads.clear()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> FakeConsul:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        """host:port, the form CONSUL_HTTP_ADDR takes."""
        return f"127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- test controls ----------------------------------------------------------------------

    def fail_next(self, *faults: Fault) -> None:
        """Queues faults; each answers (or drops) the next request matching its path prefix."""
        with self._lock:
            self._faults.extend(faults)

    def garbage_next(self, count: int = 1, path_prefix: str = "/v1/health/service/") -> None:
        """The next `count` matching requests get 200 with a body that is not JSON."""
        self.fail_next(*(Fault(path_prefix, 200, b'[{"Node": {"Node": "x"}, "Service": ') for _ in range(count)))

    def inject_entry(self, service_name: str, entry: dict[str, Any]) -> None:
        """Adds a raw health entry to every answer about `service_name` (with or without ?passing)."""
        with self._lock:
            self._state.injected.setdefault(service_name, []).append(entry)
            self._state.bump(service_name)
            self._lock.notify_all()

    def clear_injected(self) -> None:
        with self._lock:
            for service_name in list(self._state.injected):
                self._state.bump(service_name)
            self._state.injected.clear()
            self._lock.notify_all()

    def service_ids(self, service_name: str, *, passing: bool = False) -> list[str]:
        """IDs of the registered instances of `service_name` (only those with all checks passing)."""
        with self._lock:
            return [
                s.service_id
                for s in self._state.services.values()
                if s.name == service_name and (not passing or all(c.status == PASSING for c in s.checks))
            ]

    def wait_until(self, predicate: Callable[[FakeConsul], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    # -- the agent ----------------------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    self._faults.remove(fault)
                    return fault
        return None

    def register_raw(self, service_id: str, name: str, address: str, port: int) -> None:
        """An entry as another process (a dead pod, an older ID scheme) left it, without checks."""
        self._register({"ID": service_id, "Name": name, "Address": address, "Port": port}, True)

    def _register(self, body: Any, replace_existing_checks: bool, rules: AclRules | None = None) -> None:
        fields = _fields(body, "service")
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequestError("Missing service name")
        if rules is not None and not rules.may_write_service(name):
            raise PermissionDeniedError(f"Permission denied: token lacks permission 'service:write' on \"{name}\"")
        service_id = fields.get("id") or name
        port = fields.get("port", 0) or 0
        if isinstance(port, bool) or not isinstance(port, int):
            raise BadRequestError("Request decode failed: Port must be a number")
        address = fields.get("address") or ""
        tags = fields.get("tags") or []
        meta = fields.get("meta") or {}
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise BadRequestError("Request decode failed: Tags must be a list of strings")
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise BadRequestError("Invalid Service Meta: values must be strings")
        _validate_meta(meta)
        raw_checks = list(fields.get("checks") or [])
        if fields.get("check"):
            raw_checks.append(fields["check"])
        with self._lock:
            state = self._state
            existing = state.services.get(service_id)
            create_index = existing.create_index if existing else state.index + 1
            index = state.bump(name)
            checks = [self._check(raw, service_id, name, position, index) for position, raw in enumerate(raw_checks)]
            if existing is not None and not replace_existing_checks:
                kept = [c for c in existing.checks if c.check_id not in {n.check_id for n in checks}]
                checks = kept + checks
            state.services[service_id] = _Service(
                service_id, name, address, port, list(tags), dict(meta), checks, create_index, index
            )
            for check in checks:
                if existing is None or all(check is not old for old in existing.checks):
                    self._spawn(self._run_check, f"fake-consul-check {check.check_id}", state, check)
            self._lock.notify_all()

    def _check(self, raw: Any, service_id: str, service_name: str, position: int, index: int) -> _Check:
        fields = _fields(raw, "check")
        target = fields.get("grpc")
        if not isinstance(target, str) or not target:
            raise BadRequestError("fake consul: only GRPC checks are supported")
        use_tls, skip_verify = fields.get("grpcusetls", False), fields.get("tlsskipverify", False)
        server_name = fields.get("tlsservername") or ""
        if not isinstance(use_tls, bool) or not isinstance(skip_verify, bool) or not isinstance(server_name, str):
            raise BadRequestError(
                "Request decode failed: GRPCUseTLS and TLSSkipVerify are booleans, TLSServerName a string"
            )
        interval = parse_duration(fields.get("interval", "0"), "Interval")
        if interval <= 0:
            raise BadRequestError("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks")
        timeout = parse_duration(fields.get("timeout", "0"), "Timeout") or _DEFAULT_CHECK_TIMEOUT_SECONDS
        deregister_after = parse_duration(fields.get("deregistercriticalserviceafter", "0"), "DeregisterAfter")
        host_port, _, grpc_service = target.partition("/")
        status = fields.get("status") or CRITICAL
        if status not in (PASSING, WARNING, CRITICAL):
            raise BadRequestError(f"Status {status!r} is not passing, warning or critical")
        suffix = f":{position + 1}" if position else ""
        return _Check(
            check_id=fields.get("checkid") or f"service:{service_id}{suffix}",
            name=fields.get("name") or f"Service '{service_name}' check",
            service_id=service_id,
            service_name=service_name,
            grpc_target=host_port,
            grpc_service=grpc_service,
            interval=max(interval, self.min_check_interval),
            timeout=timeout,
            deregister_after=max(deregister_after, self.min_deregister_after) if deregister_after else 0.0,
            use_tls=use_tls,
            tls_server_name=server_name,
            tls_skip_verify=skip_verify,
            status=status,
            create_index=index,
            modify_index=index,
        )

    def _deregister(self, service_id: str, rules: AclRules | None = None) -> bool:
        with self._lock:
            service = self._state.services.get(service_id)
            if service is None:
                return False
            if rules is not None and not rules.may_write_service(service.name):
                raise PermissionDeniedError(
                    f"Permission denied: token lacks permission 'service:write' on \"{service.name}\""
                )
            del self._state.services[service_id]
            self._state.bump(service.name)
            self._lock.notify_all()
            return True

    def _agent_service(self, service_id: str, rules: AclRules | None = None) -> dict[str, Any] | None:
        with self._lock:
            service = self._state.services.get(service_id)
            if service is None:
                return None
            if rules is not None and not rules.may_read_service(service.name):
                raise PermissionDeniedError(
                    f"Permission denied: token lacks permission 'service:read' on \"{service.name}\""
                )
            answer = service.as_json(self.datacenter)
            answer["ContentHash"] = f"{service.modify_index:016x}"
            return answer

    def _agent_services(self, rules: AclRules | None) -> tuple[dict[str, Any], bool]:
        """Every instance of this agent by ID, less those the token may not read; and whether any were."""
        with self._lock:
            services = list(self._state.services.values())
        visible = {s.service_id: s.as_json(self.datacenter) for s in services if _may_read(rules, s.name)}
        return visible, len(visible) < len(services)

    def _health(
        self, name: str, query: dict[str, list[str]], rules: AclRules | None = None
    ) -> tuple[int, list[dict[str, Any]], bool] | None:
        """(index, entries, filtered by ACLs); blocks for a blocking query. None when the agent stopped meanwhile."""
        wanted_index = int(query.get("index", ["0"])[0] or 0)
        wait = min(parse_duration(query.get("wait", ["5m"])[0], "wait"), _MAX_WAIT_SECONDS)
        wait = wait or _DEFAULT_WAIT_SECONDS
        deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
        with self._lock:
            state = self._state
            if wanted_index > 0:
                while state.index_of(name) <= wanted_index and not state.stopping.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(left)
            if state.stopping.is_set():
                return None
            passing = "passing" in query and query["passing"][0].lower() not in ("0", "false")
            tags = query.get("tag", [])
            entries = []
            for service in state.services.values():
                if service.name != name or not all(tag in service.tags for tag in tags):
                    continue
                if passing and any(check.status != PASSING for check in service.checks):
                    continue
                entries.append(self._entry(service))
            entries.extend(json.loads(json.dumps(state.injected.get(name, []))))
            # aclFilter.filterCheckServiceNodes: an entry needs node:read on its node and service:read.
            visible = [e for e in entries if rules is None or (rules.node_read and rules.may_read_service(name))]
            return state.index_of(name), visible, len(visible) < len(entries)

    def _entry(self, service: _Service) -> dict[str, Any]:
        serf = {
            "Node": self.node,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": PASSING,
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "Type": "",
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }
        return {
            "Node": {
                "ID": "00000000-0000-0000-0000-000000000001",
                "Node": self.node,
                "Address": self.node_address,
                "Datacenter": self.datacenter,
                "TaggedAddresses": {"lan": self.node_address, "wan": self.node_address},
                "Meta": {"consul-network-segment": ""},
                "CreateIndex": 1,
                "ModifyIndex": 1,
            },
            "Service": service.as_json(self.datacenter),
            "Checks": [serf, *(check.as_json(self.node) for check in service.checks)],
        }

    # -- background work ------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run_check(self, state: _State, check: _Check) -> None:
        """Runs one GRPC check until it is removed or the agent stops; updates its status on change."""
        # Consul staggers a new check's first run randomly within its interval.
        if state.stopping.wait(random.uniform(0, check.interval)):
            return
        while not state.stopping.is_set() and self._still_registered(state, check):
            # Like Consul's GrpcHealthProbe: a new connection for every run.
            try:
                with _check_channel(check, self.check_tls) as channel:
                    status, output = _grpc_health(health_pb2_grpc.HealthStub(channel), check)
            except (OSError, ValueError) as error:  # TLS files unreadable, or the server's certificate not fetched
                status, output = CRITICAL, f"gRPC {check.grpc_target}: TLS setup failed: {error}"
            self._set_status(state, check, status, output)
            if state.stopping.wait(check.interval):
                return

    def _still_registered(self, state: _State, check: _Check) -> bool:
        with self._lock:
            service = state.services.get(check.service_id)
            return service is not None and any(c is check for c in service.checks)

    def _set_status(self, state: _State, check: _Check, status: str, output: str) -> None:
        with self._lock:
            check.output = output
            if status == check.status:
                return
            if status == CRITICAL:
                check.critical_since = time.monotonic()
            check.status = status
            check.modify_index = state.bump(check.service_name)
            self._lock.notify_all()

    def _reap(self, state: _State) -> None:
        """Deregisters services whose check stayed critical past DeregisterCriticalServiceAfter."""
        while not state.stopping.wait(self.reap_interval):
            now = time.monotonic()
            with self._lock:
                doomed = [
                    service.service_id
                    for service in state.services.values()
                    for check in service.checks
                    if check.deregister_after
                    and check.status == CRITICAL
                    and now - check.critical_since >= check.deregister_after
                ]
            for service_id in doomed:
                if state is self._state:
                    self._deregister(service_id)


def _validate_meta(meta: dict[str, str]) -> None:
    """Consul's limits on service Meta; lengths in bytes, as Go counts them."""
    if len(meta) > _META_MAX_PAIRS:
        raise BadRequestError(
            f"Invalid Service Meta: Node metadata cannot contain more than {_META_MAX_PAIRS} key/value pairs"
        )
    for key, value in meta.items():
        problem = ""
        if not key:
            problem = "Key cannot be blank"
        elif not _META_KEY_FORMAT.match(key):
            problem = "Key contains invalid characters"
        elif len(key.encode()) > _META_KEY_MAX_LENGTH:
            problem = f"Key is too long (limit: {_META_KEY_MAX_LENGTH} characters)"
        elif key.startswith(_META_RESERVED_PREFIX):
            problem = f"Key prefix '{_META_RESERVED_PREFIX}' is reserved for internal use"
        elif len(value.encode()) > _META_VALUE_MAX_LENGTH:
            problem = f"Value is too long (limit: {_META_VALUE_MAX_LENGTH} characters)"
        if problem:
            raise BadRequestError(f"Invalid Service Meta: Couldn't load metadata pair ('{key}', '{value}'): {problem}")


def _may_read(rules: AclRules | None, service_name: str) -> bool:
    return rules is None or rules.may_read_service(service_name)


def _check_channel(check: _Check, agent_tls: AgentCheckTLS | None) -> grpc.Channel:
    """The channel one check run dials: plaintext, or TLS as tlsutil.OutgoingTLSConfigForCheck builds it."""
    if not check.use_tls:
        return grpc.insecure_channel(check.grpc_target)
    roots = key = chain = None
    if agent_tls is not None:
        roots = Path(agent_tls.ca_file).read_bytes()
        if agent_tls.cert_file and agent_tls.key_file:
            chain, key = Path(agent_tls.cert_file).read_bytes(), Path(agent_tls.key_file).read_bytes()
    server_name = check.tls_server_name
    if check.tls_skip_verify:
        # Go's InsecureSkipVerify: trust the certificate the server presents, under whatever name it has.
        roots, presented_name = _presented_certificate(check.grpc_target)
        server_name = presented_name
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(check.grpc_target, credentials, options=options)


def _presented_certificate(target: str) -> tuple[bytes, str]:
    """The server's leaf certificate (unverified) and a name it is issued for."""
    from cryptography import x509  # dev dependency: only TLSSkipVerify checks need it
    from cryptography.x509.oid import NameOID

    host, _, port = target.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ValueError("the server presented no certificate")
    certificate = x509.load_der_x509_certificate(der)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = []
    common = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return ssl.DER_cert_to_PEM_cert(der).encode(), next(iter([*dns_names, *common]), host)


def _grpc_health(stub: health_pb2_grpc.HealthStub, check: _Check) -> tuple[str, str]:
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=check.grpc_service), timeout=check.timeout)
    except grpc.RpcError as error:
        return CRITICAL, f"gRPC {check.grpc_target}: {error.code().name}: {error.details()}"  # type: ignore[attr-defined]
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return (PASSING if response.status == health_pb2.HealthCheckResponse.SERVING else CRITICAL), (
        f"gRPC {check.grpc_target} service {check.grpc_service or '(all)'}: {status}"
    )


class _ConsulHandler(BaseHTTPRequestHandler):
    consul: FakeConsul
    protocol_version = "HTTP/1.1"
    _token_sent = False

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the fake's state, not its access log."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        token = self.headers.get("X-Consul-Token") or query.get("token", [""])[0]
        self.consul.requests.append((method, path, bool(token)))
        fault = self.consul._take_fault(path)
        if fault is not None:
            if fault.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(fault.status, fault.body, index=self.consul._state.index, content_type="application/json")
            return
        acl_tokens = self.consul.acl_tokens
        if acl_tokens is not None and token and token not in acl_tokens:
            self._send(403, b"ACL not found")
            return
        # ACLs on: an absent token is the anonymous token, which may do nothing here.
        rules = None if acl_tokens is None else acl_tokens.get(token, AclRules())
        self._token_sent = bool(token)
        try:
            self._route(method, path, query, body, rules)
        except BadRequestError as error:
            self._send(400, str(error).encode())
        except PermissionDeniedError as error:
            self._send(403, str(error).encode())
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes, rules: AclRules | None) -> None:
        consul = self.consul
        if method == "PUT" and path == "/v1/agent/service/register":
            try:
                payload = json.loads(body or b"{}")
            except json.JSONDecodeError as error:
                raise BadRequestError(f"Request decode failed: {error}") from None
            replace = query.get("replace-existing-checks", ["false"])[0].lower() in ("true", "1", "")
            consul._register(payload, replace, rules)
            self._send(200, b"")
        elif method == "PUT" and path.startswith("/v1/agent/service/deregister/"):
            service_id = path.removeprefix("/v1/agent/service/deregister/")
            if consul._deregister(service_id, rules):
                self._send(200, b"")
            else:
                self._send(404, f'Unknown service ID "{service_id}". Ensure that the service ID is passed'.encode())
        elif method == "GET" and path == "/v1/agent/services":
            services, filtered = consul._agent_services(rules)
            self._json(services, consul._state.index, filtered=filtered)
        elif method == "GET" and path.startswith("/v1/agent/service/"):
            service_id = path.removeprefix("/v1/agent/service/")
            answer = consul._agent_service(service_id, rules)
            if answer is None:
                self._send(404, f"unknown service ID: {service_id}".encode())
            else:
                self._json(answer, consul._state.index)
        elif method == "GET" and path.startswith("/v1/health/service/"):
            result = consul._health(path.removeprefix("/v1/health/service/"), query, rules)
            if result is None:  # the agent stopped while the query blocked: cut the connection
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            index, entries, filtered = result
            self._json(entries, index, filtered=filtered)
        elif method == "GET" and path == "/v1/status/leader":
            self._json("127.0.0.1:8300", consul._state.index)
        else:
            self._send(
                405 if path.startswith("/v1/") else 404, f"fake consul: {method} {path} is not supported".encode()
            )

    def _json(self, payload: Any, index: int, *, filtered: bool = False) -> None:
        # Consul's maskResultsFilteredByACLs: the header only for a request that carried a token.
        headers = {ACL_FILTERED_HEADER: "true"} if filtered and self._token_sent else {}
        self._send(200, json.dumps(payload).encode(), index=index, content_type="application/json", headers=headers)

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        index: int | None = None,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if index is not None:
            self.send_header("X-Consul-Index", str(max(index, 1)))
            self.send_header("X-Consul-KnownLeader", "true")
            self.send_header("X-Consul-LastContact", "0")
        self.end_headers()
        self.wfile.write(body)


def serve(argv: list[str] | None = None) -> None:
    """Runs the double until SIGTERM/SIGINT (llmmesh up --discovery consul without a Consul binary)."""
    parser = argparse.ArgumentParser(prog="python -m services.testing.fake_consul")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--min-check-interval", type=float, default=1.0)
    parser.add_argument("--min-deregister-after", type=float, default=60.0)
    parser.add_argument("--reap-interval", type=float, default=30.0)
    args = parser.parse_args(argv)
    fake = FakeConsul(
        port=args.port,
        min_check_interval=args.min_check_interval,
        min_deregister_after=args.min_deregister_after,
        reap_interval=args.reap_interval,
    ).start()
    print(f"fake consul agent on http://{fake.address} (CONSUL_HTTP_ADDR={fake.address})", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    fake.stop()


if __name__ == "__main__":
    serve()
