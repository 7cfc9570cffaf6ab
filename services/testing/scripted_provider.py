"""A ProviderService whose every upstream call does what the test scripted, and says what happened.

For tests that drive a real router against fault-injecting adapters: each
call is matched to a script by the request's tag (a `tag=<id>` word in the
last user message) and the model asked for, and takes the next behaviour
queued for that pair (an answer after a delay, a failure with a code and
Retry-After, a stream of N chunks that finishes, is cut, fails or ends
without a final, or a hang until cancelled). Every call is recorded with how
it ended, so a test can check that the router accounted for each one and
left none running. Several servers may share one script and one log, as
instances of one adapter kind.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Literal

import grpc

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from services.common.errors import MeshError

Kind = Literal["answer", "fail", "hang"]
Ending = Literal["finish", "cut", "error", "eof"]
_TAG = re.compile(r"\btag=(\S+)")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What one upstream call does.

    `answer`: after `delay`, answer (unary) or stream `chunks` chunks
    `chunk_delay` apart and end as `ending` says: `finish` (a final
    message), `cut` (UNAVAILABLE with no details, like a dropped
    connection), `error` (`code` with a reason), `eof` (no final message).
    `fail`: after `delay`, fail with `code`, `reason` and `retry_after`.
    `hang`: wait until cancelled.
    """

    kind: Kind = "answer"
    delay: float = 0.0
    code: str = "UNAVAILABLE"
    reason: str = "SCRIPTED_FAILURE"
    retry_after: float | None = None
    chunks: int = 3
    chunk_delay: float = 0.0
    ending: Ending = "finish"

    @property
    def answers(self) -> bool:
        """A call with this behaviour ends with a complete answer."""
        return self.kind == "answer" and self.ending == "finish"


HEALTHY = Behaviour()


@dataclass(slots=True)
class UpstreamCall:
    """One call that reached a scripted server."""

    tag: str
    model: str
    instance: str
    stream: bool
    behaviour: Behaviour
    started: float
    ended: float | None = None
    how: str = "running"  # answered, failed, cancelled, cut, eof
    text: str = ""  # what it sent as the answer (streams: the deltas joined)


@dataclass
class Script:
    """The behaviours queued per (tag, model); a call with nothing queued gets `default`."""

    default: Behaviour = HEALTHY
    _queues: dict[tuple[str, str], deque[Behaviour]] = field(default_factory=lambda: defaultdict(deque))

    def queue(self, tag: str, model: str, behaviours: Iterable[Behaviour]) -> None:
        self._queues[(tag, model)].extend(behaviours)

    def next(self, tag: str, model: str) -> Behaviour:
        queued = self._queues.get((tag, model))
        return queued.popleft() if queued else self.default


class _Servicer(provider_service_pb2_grpc.ProviderServiceServicer):
    def __init__(self, fleet: ScriptedProviders, instance: str) -> None:
        self._fleet = fleet
        self.instance = instance

    async def Chat(  # noqa: N802
        self, request: ppb.ProviderServiceChatRequest, context: grpc.aio.ServicerContext
    ) -> ppb.ProviderServiceChatResponse:
        call = self._fleet.begin(request, self.instance, stream=False)
        try:
            await self._wait(call.behaviour)
            if call.behaviour.kind == "fail":
                await self._fail(call, context, call.behaviour.code)
            call.text = f"{call.model} answers {call.tag}"
            message = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, content=[chat_pb2.ContentPart(text=call.text)])
            self._fleet.end(call, "answered")
            return ppb.ProviderServiceChatResponse(
                message=message, finish_reason=chat_pb2.FINISH_REASON_STOP, response_model=call.model
            )
        except asyncio.CancelledError:
            self._fleet.end(call, "cancelled")
            raise

    async def StreamChat(  # noqa: N802
        self, request: ppb.ProviderServiceStreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ppb.ProviderServiceStreamChatResponse]:
        call = self._fleet.begin(request, self.instance, stream=True)
        behaviour = call.behaviour
        try:
            await self._wait(behaviour)
            if behaviour.kind == "fail":
                await self._fail(call, context, behaviour.code)
            for index in range(behaviour.chunks):
                if index and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                piece = f"{call.model}:{call.tag}:{index} "
                call.text += piece
                yield ppb.ProviderServiceStreamChatResponse(delta=chat_pb2.ChatDelta(text=piece))
            if behaviour.ending == "cut":
                self._fleet.end(call, "cut")
                await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: connection cut")
            if behaviour.ending == "error":
                await self._fail(call, context, behaviour.code)
            if behaviour.ending == "eof":
                self._fleet.end(call, "eof")
                return
            self._fleet.end(call, "answered")
            yield ppb.ProviderServiceStreamChatResponse(
                final=ppb.ProviderStreamFinal(finish_reason=chat_pb2.FINISH_REASON_STOP, response_model=call.model)
            )
        except asyncio.CancelledError:
            self._fleet.end(call, "cancelled")
            raise

    async def ListModels(  # noqa: N802
        self, request: ppb.ProviderServiceListModelsRequest, context: grpc.aio.ServicerContext
    ) -> ppb.ProviderServiceListModelsResponse:
        return ppb.ProviderServiceListModelsResponse(provider="scripted")

    @staticmethod
    async def _wait(behaviour: Behaviour) -> None:
        if behaviour.kind == "hang":
            await asyncio.Event().wait()  # until the router cancels the call (or its deadline does)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)

    async def _fail(self, call: UpstreamCall, context: grpc.aio.ServicerContext, code: str) -> None:
        behaviour = call.behaviour
        self._fleet.end(call, "failed")
        error = MeshError(
            grpc.StatusCode[code], f"scripted {code}", reason=behaviour.reason, retry_after=behaviour.retry_after
        )
        await context.abort_with_status(error.to_status())


class ScriptedProviders:
    """`count` scripted servers on loopback (one adapter kind's instances), sharing a script and a call log."""

    def __init__(self, count: int = 2, script: Script | None = None) -> None:
        self.count = count
        self.script = script or Script()
        self.calls: list[UpstreamCall] = []
        self.addresses: list[str] = []
        self._servers: list[grpc.aio.Server] = []

    async def start(self) -> ScriptedProviders:
        for _ in range(self.count):
            server = grpc.aio.server()
            port = server.add_insecure_port("127.0.0.1:0")
            address = f"127.0.0.1:{port}"
            provider_service_pb2_grpc.add_ProviderServiceServicer_to_server(_Servicer(self, address), server)
            await server.start()
            self._servers.append(server)
            self.addresses.append(address)
        return self

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop(grace=None)
        self._servers.clear()

    def begin(
        self,
        request: ppb.ProviderServiceChatRequest | ppb.ProviderServiceStreamChatRequest,
        instance: str,
        *,
        stream: bool,
    ) -> UpstreamCall:
        tag = _tag_of(request)
        call = UpstreamCall(
            tag, request.model, instance, stream, self.script.next(tag, request.model), time.monotonic()
        )
        self.calls.append(call)
        return call

    @staticmethod
    def end(call: UpstreamCall, how: str) -> None:
        if call.ended is None:
            call.ended = time.monotonic()
            call.how = how

    def calls_for(self, tag: str) -> list[UpstreamCall]:
        return [call for call in self.calls if call.tag == tag]

    def running(self) -> list[UpstreamCall]:
        return [call for call in self.calls if call.ended is None]


def _tag_of(request: ppb.ProviderServiceChatRequest | ppb.ProviderServiceStreamChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == chat_pb2.ROLE_USER:
            found = _TAG.search(" ".join(part.text for part in message.content))
            if found:
                return found.group(1)
    return ""
