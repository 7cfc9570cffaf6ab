"""py-consul on an httpx2 transport.

py-consul ships two transports: `consul.std` (requests, blocking) and
`consul.aio` (aiohttp). We plug a third into its documented extension point
(`base.HTTPClient`, `Consul.http_connect`) on httpx2, which every SDK here
already uses: no aiohttp in the process (google-genai switches its transport
and retry behaviour when aiohttp is importable), cancellable asyncio calls,
and an explicit timeout on every request (aiohttp's default 300 s would cut a
5-minute blocking query; we size ours from the query's wait instead).

The agent address and token come from CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN
(and CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY), read by py-consul itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import consul.base
import httpx2
from consul.callback import CB

from services.common.settings import ConfigError

# Consul adds up to wait/16 of jitter to a blocking query; the read timeout leaves room for it.
_WAIT_JITTER_FRACTION = 1 / 16
_TIMEOUT_MARGIN_SECONDS = 5.0


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string, the form Consul parses ("200ms", "10s")."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def blocking_read_timeout(wait_seconds: float) -> float:
    """A read timeout that outlasts a blocking query's wait plus Consul's jitter."""
    return wait_seconds * (1 + _WAIT_JITTER_FRACTION) + _TIMEOUT_MARGIN_SECONDS


class _HttpxClient(consul.base.HTTPClient):
    """py-consul's HTTP interface over one httpx2.AsyncClient (keep-alive, asyncio)."""

    def __init__(
        self,
        host: str,
        port: int,
        scheme: str,
        verify: bool | str = True,
        cert: Any = None,
        *,
        timeout: httpx2.Timeout,
    ) -> None:
        super().__init__(host, port, scheme, verify, cert)
        # trust_env=False: the Consul agent is local to the node; a proxy in between is a misconfiguration.
        self._client = httpx2.AsyncClient(verify=verify, cert=cert, timeout=timeout, trust_env=False)

    async def _request(
        self, callback: Any, method: str, path: str, params: Any, headers: Any, data: str | bytes | None = None
    ) -> Any:
        response = await self._client.request(method, self.uri(path, params), headers=headers, content=data or None)
        return callback(consul.base.Response(response.status_code, response.headers, response.text))

    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False) -> Any:
        return self._request(callback, "GET", path, params, headers)

    def put(self, callback: Any, path: str, params: Any = None, data: str | bytes = "", headers: Any = None) -> Any:
        return self._request(callback, "PUT", path, params, headers, data)

    def delete(self, callback: Any, path: str, params: Any = None, data: str | bytes = "", headers: Any = None) -> Any:
        return self._request(callback, "DELETE", path, params, headers, data)

    def post(self, callback: Any, path: str, params: Any = None, data: str = "", headers: Any = None) -> Any:
        return self._request(callback, "POST", path, params, headers, data)

    def close(self) -> Any:
        return self._client.aclose()


class AsyncConsul(consul.base.Consul):
    """py-consul's API (agent, health, ...) with awaitable calls over httpx2."""

    def __init__(self, *, timeout: httpx2.Timeout, **kwargs: Any) -> None:
        self._timeout = timeout
        super().__init__(**kwargs)

    def http_connect(self, host: str, port: int, scheme: Any, verify: bool | str = True, cert: Any = None) -> Any:
        return _HttpxClient(host, port, scheme, verify, cert, timeout=self._timeout)

    @property
    def address(self) -> str:
        """The agent's base URL, for logs."""
        return str(self.http.base_uri)

    async def aclose(self) -> None:
        await self.http.close()


# Consul sets it (only for requests that carry a token) when ACLs removed entries from the answer.
ACL_FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


@dataclass(frozen=True)
class HealthAnswer:
    """One /v1/health/service answer: the index, the entries, and whether ACLs hid some of them."""

    index: str
    entries: Any
    filtered_by_acls: bool


async def passing_instances(consul: AsyncConsul, service: str, *, index: int, wait: str) -> HealthAnswer:
    """GET /v1/health/service/<service>?passing, as py-consul's health.service, keeping the ACL header."""
    params: list[tuple[str, str]] = [("passing", "1")]
    if index:
        params += [("index", str(index)), ("wait", wait)]
    entries_of = CB.json(index=True)

    def answer(response: Any) -> HealthAnswer:  # consul.base.Response, a namedtuple mypy cannot see
        index_header, entries = entries_of(response)
        filtered = str(response.headers.get(ACL_FILTERED_HEADER, "")).lower() == "true"
        return HealthAnswer(index_header, entries, filtered)

    return await consul.http.get(  # type: ignore[no-any-return]
        answer, f"/v1/health/service/{service}", params=params, headers=consul.prepare_headers()
    )


def consul_client(read_timeout: float, connect_timeout: float = 2.0) -> AsyncConsul:
    """A client for the agent at CONSUL_HTTP_ADDR (default 127.0.0.1:8500); ConfigError if that is malformed."""
    try:
        return AsyncConsul(timeout=httpx2.Timeout(read_timeout, connect=min(connect_timeout, read_timeout)))
    except consul.base.ConsulException as error:
        raise ConfigError(f"CONSUL_HTTP_ADDR: {error}") from None
