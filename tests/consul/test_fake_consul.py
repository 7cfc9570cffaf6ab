"""The Consul API as llmmesh uses it, pinned against the double (and a real dev agent when on PATH).

Driven through py-consul on our httpx2 transport, the client the services use.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import consul.callback
import pytest
from consul.check import Check
from consul.exceptions import BadRequest

from services.common.consul_discovery.client import AsyncConsul, consul_client
from services.common.consul_discovery.registration import meta_list
from services.common.processes import ServiceProcess, start_service
from services.testing.fake_consul import ACL_FILTERED_HEADER, AclRules, FakeConsul
from tests.consul.helpers import ConsulBackend, until

pytestmark = pytest.mark.consul


@pytest.fixture
async def client(consul_backend: ConsulBackend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncConsul]:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_backend.address)
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    consul = consul_client(read_timeout=30)
    try:
        yield consul
    finally:
        await consul.aclose()


@pytest.fixture(scope="module")
def health_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A process serving grpc.health.v1 (a mock adapter that does not register itself)."""
    process = start_service(
        ["-m", "services.providers.mock"], name="health-target", workdir=tmp_path_factory.mktemp("target")
    )
    try:
        yield process
    finally:
        process.terminate()


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _register(client: AsyncConsul, name: str, service_id: str, port: int, **check: str) -> None:
    await client.agent.service.register(
        name,
        service_id=service_id,
        address="127.0.0.1",
        port=port,
        check=Check.grpc(f"127.0.0.1:{port}/llmmesh.v1.ProviderService", "200ms", timeout="1s", **check),
    )


class TestAgentEndpoints:
    async def test_register_read_and_deregister(self, client: AsyncConsul) -> None:
        """py-consul's lowercase registration is stored as sent; deregistering twice answers False the second time."""
        await client.agent.service.register(
            "svc-crud", service_id="crud-1", address="127.0.0.1", port=4321, tags=["t"], meta={"Models": "a,b"}
        )
        known = await client.agent.service_definition("crud-1")
        assert (known["ID"], known["Service"], known["Port"], known["Tags"]) == ("crud-1", "svc-crud", 4321, ["t"])
        assert known["Meta"] == {"Models": "a,b"}  # user keys keep their case
        assert await client.agent.service.deregister("crud-1") is True
        assert await client.agent.service_definition("crud-1") is None
        assert await client.agent.service.deregister("crud-1") is False

    async def test_keys_in_any_case(self, consul_backend: ConsulBackend, client: AsyncConsul) -> None:
        """CamelCase, lowercase and snake_case keys all register the same service."""
        status, _, _ = consul_backend.request(
            "PUT", "/v1/agent/service/register", {"NAME": "svc-case", "Id": "case-1", "port": 1111, "TAGS": ["x"]}
        )
        assert status == 200
        known = await client.agent.service_definition("case-1")
        assert (known["Service"], known["Port"], known["Tags"]) == ("svc-case", 1111, ["x"])
        await client.agent.service.deregister("case-1")

    async def test_missing_name_is_a_bad_request(self, client: AsyncConsul) -> None:
        """A registration without a name is a 400, which py-consul raises as BadRequest."""
        with pytest.raises(BadRequest):
            await client.http.put(
                consul.callback.CB.boolean(), "/v1/agent/service/register", data='{"port": 1}', headers={}
            )


class TestHealthChecks:
    async def test_checks_start_critical_and_follow_the_grpc_health_endpoint(
        self, client: AsyncConsul, health_target: ServiceProcess
    ) -> None:
        """A new gRPC check is critical until it has run; then it is passing for a SERVING target, critical for a dead one."""
        await _register(client, "svc-check", "live-1", health_target.port)
        await _register(client, "svc-check", "dead-1", _dead_port())
        try:
            _, entries = await client.health.service("svc-check")
            first_look = {e["Service"]["ID"]: [c["Status"] for c in e["Checks"][1:]] for e in entries}
            assert first_look["dead-1"] == ["critical"]

            async def passing_ids() -> set[str]:
                _, found = await client.health.service("svc-check", passing=True)
                return {e["Service"]["ID"] for e in found}

            deadline = time.monotonic() + 15
            while await passing_ids() != {"live-1"}:
                assert time.monotonic() < deadline, "the live instance never passed"
                await asyncio.sleep(0.05)
            _, entries = await client.health.service("svc-check")
            dead = next(e for e in entries if e["Service"]["ID"] == "dead-1")
            assert dead["Checks"][-1]["Status"] == "critical"
        finally:
            await client.agent.service.deregister("live-1")
            await client.agent.service.deregister("dead-1")

    async def test_deregister_critical_service_after(self, consul_backend: ConsulBackend, client: AsyncConsul) -> None:
        """An instance whose check stays critical past DeregisterCriticalServiceAfter is removed (double: test floor)."""
        consul_backend.fake  # noqa: B018 - a real agent's floor is 1 min plus a 30 s reaper: too slow here
        await _register(client, "svc-reap", "reap-1", _dead_port(), deregister="500ms")
        await until(lambda: not consul_backend.instances("svc-reap"), what="the reaper")


class TestBlockingQueries:
    async def test_index_is_positive_and_a_query_without_index_answers_at_once(self, client: AsyncConsul) -> None:
        """Every answer carries an X-Consul-Index of at least 1, even for an unknown service."""
        index, entries = await client.health.service("svc-never-registered")
        assert int(index) >= 1
        assert entries == []

    async def test_blocks_until_the_wait_elapses(self, client: AsyncConsul) -> None:
        """A blocking query on an unchanged service holds for its wait and returns the same index."""
        index, _ = await client.health.service("svc-quiet")
        started = time.monotonic()
        again, _ = await client.health.service("svc-quiet", index=index, wait="1s")
        assert time.monotonic() - started >= 0.9
        assert again == index

    async def test_wakes_when_the_service_changes(self, client: AsyncConsul) -> None:
        """A blocking query with a long wait returns once the service changes, with a larger index."""
        index, _ = await client.health.service("svc-wake")
        query = asyncio.ensure_future(client.health.service("svc-wake", index=index, wait="60s"))
        await asyncio.sleep(0.2)
        assert not query.done()
        await client.agent.service.register("svc-wake", service_id="wake-1", port=2222)
        try:
            new_index, entries = await asyncio.wait_for(query, timeout=20)
            assert int(new_index) > int(index)
            assert [e["Service"]["ID"] for e in entries] == ["wake-1"]
        finally:
            await client.agent.service.deregister("wake-1")


class TestRestart:
    async def test_a_restarted_agent_forgets_its_services(
        self, consul_backend: ConsulBackend, client: AsyncConsul
    ) -> None:
        """After a stop and start the agent no longer knows what was registered (a dev agent keeps no state)."""
        await client.agent.service.register("svc-forget", service_id="forget-1", port=3333)
        consul_backend.stop()
        consul_backend.start()
        assert await client.agent.service_definition("forget-1") is None


class TestMetaLimits:
    async def test_meta_values_are_limited_in_bytes(self, client: AsyncConsul) -> None:
        """512 bytes of Meta value register, 513 do not, even when that is fewer than 512 characters."""
        fits = "é" * 256  # 256 characters, 512 bytes
        await client.agent.service.register("svc-meta", service_id="meta-1", port=1, meta={"models": fits})
        try:
            with pytest.raises(BadRequest, match="Value is too long"):
                await client.agent.service.register(
                    "svc-meta", service_id="meta-2", port=1, meta={"models": fits + "e"}
                )
        finally:
            await client.agent.service.deregister("meta-1")

    async def test_meta_list_cuts_the_models_to_what_consul_accepts(self, client: AsyncConsul) -> None:
        """meta_list keeps whole names within 512 bytes, so a long list of non-ASCII names still registers."""
        names = [f"modèle-{n:03d}-ü" for n in range(60)]  # ~13 characters, 15 bytes each
        value = meta_list("models", names)
        assert len(value.encode()) <= 512 < len(",".join(names).encode())
        assert len(value) <= 512
        assert value.split(",") == names[: len(value.split(","))]
        await client.agent.service.register("svc-meta", service_id="meta-3", port=1, meta={"models": value})
        await client.agent.service.deregister("meta-3")

    async def test_meta_keys_follow_consuls_rules(self, client: AsyncConsul) -> None:
        """A reserved `consul-` prefix, a bad character and a 65th pair are each refused with Consul's words."""
        for meta, words in (
            ({"consul-x": "1"}, "reserved for internal use"),
            ({"a.b": "1"}, "Key contains invalid characters"),
            ({f"k{n}": "v" for n in range(65)}, "cannot contain more than 64"),
        ):
            with pytest.raises(BadRequest, match=words):
                await client.agent.service.register("svc-meta", service_id="meta-4", port=1, meta=meta)


READER, NODELESS, WRITER = "reader-token", "no-node-read-token", "writer-token"


@pytest.fixture(scope="module")
def acl_consul() -> Iterator[FakeConsul]:
    """The double with ACLs on: a full reader, a reader without node:read, a writer of svc-acl."""
    fake = FakeConsul(
        min_check_interval=0.1,
        acl_tokens={
            READER: AclRules(service_read=("svc-acl",), node_read=True),
            NODELESS: AclRules(service_read=("svc-acl",)),
            WRITER: AclRules(service_write=("svc-acl",)),
        },
    ).start()
    try:
        yield fake
    finally:
        fake.stop()


class TestAclEmulation:
    """ACL filtering as Consul's aclFilter does it; the double only (a dev agent runs without ACLs)."""

    def _get(self, fake: FakeConsul, path: str, token: str | None) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(f"http://{fake.address}{path}", headers={"X-Consul-Token": token or ""})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def _put(self, fake: FakeConsul, path: str, body: Any, token: str) -> int:
        request = urllib.request.Request(
            f"http://{fake.address}{path}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"X-Consul-Token": token},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def test_writes_need_service_write(self, acl_consul: FakeConsul) -> None:
        """Registering needs service:write on the name: a reader gets 403, the writer 200; unknown tokens 403."""
        body = {"Name": "svc-acl", "ID": "acl-1", "Port": 4000}
        assert self._put(acl_consul, "/v1/agent/service/register", body, READER) == 403
        assert self._put(acl_consul, "/v1/agent/service/register", {**body, "Name": "other"}, WRITER) == 403
        assert self._put(acl_consul, "/v1/agent/service/register", body, "no-such-token") == 403
        assert self._put(acl_consul, "/v1/agent/service/register", body, WRITER) == 200
        assert "acl-1" in acl_consul.service_ids("svc-acl")

    def test_health_without_node_read_is_an_empty_filtered_answer(self, acl_consul: FakeConsul) -> None:
        """node:read missing: 200 [] with X-Consul-Results-Filtered-By-ACLs; with it, the entry; no token: no header."""
        acl_consul.register_raw("acl-2", "svc-acl", "127.0.0.1", 4001)
        status, headers, entries = self._get(acl_consul, "/v1/health/service/svc-acl", READER)
        assert status == 200
        assert "acl-2" in [e["Service"]["ID"] for e in entries]
        assert ACL_FILTERED_HEADER not in headers
        status, headers, entries = self._get(acl_consul, "/v1/health/service/svc-acl", NODELESS)
        assert (status, entries, headers.get(ACL_FILTERED_HEADER)) == (200, [], "true")
        status, headers, entries = self._get(acl_consul, "/v1/health/service/svc-acl", None)
        assert (status, entries) == (200, [])
        assert ACL_FILTERED_HEADER not in headers

    def test_agent_services_lists_only_what_the_token_may_read(self, acl_consul: FakeConsul) -> None:
        """GET /v1/agent/services leaves out services the token cannot read, and says so."""
        acl_consul.register_raw("hidden-1", "private", "127.0.0.1", 4002)
        _, headers, services = self._get(acl_consul, "/v1/agent/services", WRITER)
        assert "hidden-1" not in services
        assert services
        assert headers.get(ACL_FILTERED_HEADER) == "true"
