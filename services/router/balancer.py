"""Per-service instance pools: one channel per instance, power-of-two-choices.

Pools follow discovery: a new endpoint gets a channel, a leaving one stops
taking new calls and is closed once its in-flight calls have finished.

Passive health (outlier ejection): an instance that fails at the connection
level several times in a row is left out of picks for a while, before
discovery notices; each ejection in a row lasts twice as long, up to a cap.
A re-admitted instance is on probation: one more connection failure ejects
it again, one success clears its record. `Instance.track()`, which wraps
every attempt, reports each outcome, so the engine needs no calls of its own.
Like gRPC's round_robin, a pick also passes over an instance whose channel is
in TRANSIENT_FAILURE (its last connect failed): a retry goes elsewhere at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import structlog

from llmmesh.v1 import provider_service_pb2_grpc
from services.common.channels import aio_channel
from services.common.discovery import Discovery, Endpoint
from services.common.errors import MeshError

log = structlog.get_logger(__name__)

# A leaving instance's channel is closed after this long even if calls remain:
# they all carry deadlines, so nothing legitimate runs longer.
DRAIN_LIMIT_SECONDS = 600.0
# grpc-core's words when a call finds no connection to send on (first connect / channel already failing).
_NOT_SENT = ("failed to connect", "connections to all backends failing")


def never_sent(error: MeshError) -> bool:
    """The call found no connection to send on: it reached no adapter."""
    return error.code == grpc.StatusCode.UNAVAILABLE and not error.reason and error.message.startswith(_NOT_SENT)


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    """When a failing instance leaves the picks, and for how long."""

    consecutive_failures: int = 3
    base_seconds: float = 5.0
    max_seconds: float = 120.0


def connection_level(error: grpc.aio.AioRpcError, channel_state: grpc.ChannelConnectivity) -> bool:
    """A failure of the connection rather than an answer from the adapter.

    UNAVAILABLE without rich details comes from the transport (refused, reset,
    socket closed); an adapter's own UNAVAILABLE always carries ErrorInfo. A
    deadline counts only when the channel never got a connection.
    """
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return not any(key == "grpc-status-details-bin" for key, _ in error.trailing_metadata() or ())
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return channel_state != grpc.ChannelConnectivity.READY
    return False


#: Opens the channel to an instance address (TLS and the router's internal token live here).
ChannelFactory = Callable[[str], grpc.aio.Channel]


class Instance:
    """One adapter instance, the calls it is serving, and its passive health."""

    __slots__ = (
        "_clock",
        "_policy",
        "channel",
        "consecutive_failures",
        "ejected_until",
        "ejections",
        "endpoint",
        "in_flight",
        "stub",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        policy: EjectionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        channel_factory: ChannelFactory = aio_channel,
    ) -> None:
        self.endpoint = endpoint
        self.channel: grpc.aio.Channel = channel_factory(endpoint.address)
        self.stub = provider_service_pb2_grpc.ProviderServiceStub(self.channel)
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ejections = 0  # ejections in a row; > 0 after re-admission means probation
        self.ejected_until = 0.0
        self._policy = policy or EjectionPolicy()
        self._clock = clock

    @property
    def address(self) -> str:
        return self.endpoint.address

    @property
    def ejected(self) -> bool:
        return self._clock() < self.ejected_until

    def report_success(self) -> None:
        """The instance answered: its failure record starts over."""
        self.consecutive_failures = 0
        self.ejections = 0

    def report_failure(self, connection_level: bool) -> None:
        """Counts a failed attempt; only connection-level failures lead to ejection."""
        if not connection_level:
            # An answer, even an error, proves the connection works.
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        on_probation = self.ejections > 0 and not self.ejected
        if on_probation or self.consecutive_failures >= self._policy.consecutive_failures:
            self._eject()

    def report_rpc_error(self, error: grpc.aio.AioRpcError) -> None:
        """report_failure, classifying a gRPC error."""
        self.report_failure(connection_level(error, self.channel.get_state()))

    def _eject(self) -> None:
        if self.ejected:
            return
        seconds = min(self._policy.base_seconds * 2**self.ejections, self._policy.max_seconds)
        self.ejections += 1
        self.consecutive_failures = 0
        self.ejected_until = self._clock() + seconds
        log.warning("instance ejected", address=self.address, seconds=seconds, ejections_in_a_row=self.ejections)

    @property
    def connect_failing(self) -> bool:
        return self.channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE

    @contextmanager
    def track(self) -> Iterator[Instance]:
        """Counts the call in flight and reports how it ended (a cancelled call reports nothing)."""
        self.in_flight += 1
        try:
            yield self
        except grpc.aio.AioRpcError as error:
            self.report_rpc_error(error)
            raise
        else:
            self.report_success()
        finally:
            self.in_flight -= 1


class InstancePool:
    """The live instances of one service."""

    def __init__(
        self, service: str, policy: EjectionPolicy | None = None, channel_factory: ChannelFactory = aio_channel
    ) -> None:
        self.service = service
        self._policy = policy or EjectionPolicy()
        self._channel_factory = channel_factory
        self._instances: dict[str, Instance] = {}
        self._draining: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._instances)

    def instances(self) -> list[Instance]:
        return list(self._instances.values())

    def update(self, endpoints: tuple[Endpoint, ...]) -> None:
        wanted = {endpoint.instance_id: endpoint for endpoint in endpoints}
        for instance_id in list(self._instances):
            current = self._instances[instance_id]
            if instance_id not in wanted or wanted[instance_id].address != current.address:
                self._retire(self._instances.pop(instance_id))
        for instance_id, endpoint in wanted.items():
            if instance_id not in self._instances:
                self._instances[instance_id] = Instance(endpoint, self._policy, channel_factory=self._channel_factory)
                log.info("instance added", service=self.service, address=endpoint.address)

    def pick(self, exclude: frozenset[str] = frozenset()) -> Instance | None:
        """Power of two choices on in-flight calls among healthy-looking instances, skipping `exclude` addresses.

        When every instance is ejected the pool fails open and picks among all
        of them: ejection is only a local guess, a connect attempt fails fast,
        and an empty pick would turn a maybe into a certain failure.
        """
        candidates = [i for i in self._instances.values() if i.address not in exclude] if exclude else self.instances()
        choices = (
            [i for i in candidates if not i.ejected and not i.connect_failing]
            or [i for i in candidates if not i.ejected]
            or candidates
        )
        if not choices:
            return None
        if len(choices) == 1:
            return choices[0]
        first, second = random.sample(choices, 2)
        return first if first.in_flight <= second.in_flight else second

    async def reachable(self, settle_seconds: float = 1.0) -> bool:
        """Whether some instance is not ejected and not failing to connect (ListModels' `available`).

        Channels that never connected are asked to, and given `settle_seconds`
        to succeed or fail, so an address nothing listens on is not reported
        as available just because no call has tried it yet.
        """
        instances = [instance for instance in self._instances.values() if not instance.ejected]
        states = await asyncio.gather(*(_settled_state(i.channel, settle_seconds) for i in instances))
        return any(state != grpc.ChannelConnectivity.TRANSIENT_FAILURE for state in states)

    def _retire(self, instance: Instance) -> None:
        log.info("instance leaving", service=self.service, address=instance.address, in_flight=instance.in_flight)
        # grpc.aio rejects new calls on a closing channel and lets running ones finish.
        task = asyncio.get_running_loop().create_task(instance.channel.close(grace=DRAIN_LIMIT_SECONDS))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def close(self) -> None:
        for instance in self._instances.values():
            await instance.channel.close()
        self._instances.clear()
        for task in list(self._draining):
            task.cancel()


async def _settled_state(channel: grpc.aio.Channel, seconds: float) -> grpc.ChannelConnectivity:
    """The channel's state once it has left IDLE and CONNECTING, or after `seconds`."""
    state = channel.get_state(try_to_connect=True)
    try:
        async with asyncio.timeout(seconds):
            while state in (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING):
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
    except TimeoutError:
        pass  # still connecting: not known to be unreachable
    return state


class Balancer:
    """Instance pools for every service, fed by discovery."""

    def __init__(
        self,
        discovery: Discovery,
        ejection: EjectionPolicy | None = None,
        *,
        channel_factory: ChannelFactory = aio_channel,
    ) -> None:
        self._pools: dict[str, InstancePool] = {}
        self._ejection = ejection or EjectionPolicy()
        self._channel_factory = channel_factory
        discovery.subscribe(self._on_change)

    def _on_change(self, service: str, endpoints: tuple[Endpoint, ...]) -> None:
        self.pool(service).update(endpoints)

    def pool(self, service: str) -> InstancePool:
        pool = self._pools.get(service)
        if pool is None:
            pool = self._pools[service] = InstancePool(service, self._ejection, self._channel_factory)
        return pool

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
