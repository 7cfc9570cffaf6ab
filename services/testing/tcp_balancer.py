"""A loopback stand-in for a Kubernetes ClusterIP: each new TCP connection goes to the next backend.

kube-proxy balances connections, not requests: a gRPC channel that keeps one
HTTP/2 connection stays on one pod until that connection closes. Tests put
this in front of several servers to see whether callers ever move on.
Bytes are copied as they are (TLS passes through untouched); `connections`
counts the connections each backend was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Sequence


class TcpBalancer:
    """`async with TcpBalancer(["127.0.0.1:5001", ...]) as lb:` then dial `lb.address`."""

    def __init__(self, backends: Sequence[str]) -> None:
        self._backends = list(backends)
        self._next = itertools.cycle(self._backends)
        self.connections: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        assert self._server is not None, "not started"
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def set_backends(self, backends: Sequence[str]) -> None:
        """New connections go to these from now on (a pod replaced); open ones stay where they are."""
        self._backends = list(backends)
        self._next = itertools.cycle(self._backends)

    async def __aenter__(self) -> TcpBalancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend = next(self._next)
        self.connections[backend] += 1
        host, _, port = backend.rpartition(":")
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        for source, sink in ((client_reader, server_writer), (server_reader, client_writer)):
            pipe = asyncio.get_running_loop().create_task(_copy(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copies until either side closes, then closes the other."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            sink.close()
