"""Per-service instance pools: one channel per instance, power-of-two-choices.

Pools follow discovery: a new endpoint gets a channel, a leaving one stops
taking new calls and is closed once its in-flight calls have finished.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import structlog

from llmmesh.v1 import provider_service_pb2_grpc
from services.common.channels import aio_channel
from services.common.discovery import Discovery, Endpoint

log = structlog.get_logger(__name__)

# A leaving instance's channel is closed after this long even if calls remain:
# they all carry deadlines, so nothing legitimate runs longer.
DRAIN_LIMIT_SECONDS = 600.0

#: Opens the channel to an instance address (TLS and the router's internal token live here).
ChannelFactory = Callable[[str], grpc.aio.Channel]


class Instance:
    """One adapter instance and the calls it is serving."""

    __slots__ = ("channel", "endpoint", "in_flight", "stub")

    def __init__(self, endpoint: Endpoint, channel_factory: ChannelFactory = aio_channel) -> None:
        self.endpoint = endpoint
        self.channel: grpc.aio.Channel = channel_factory(endpoint.address)
        self.stub = provider_service_pb2_grpc.ProviderServiceStub(self.channel)
        self.in_flight = 0

    @property
    def address(self) -> str:
        return self.endpoint.address

    @contextmanager
    def track(self) -> Iterator[Instance]:
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1


class InstancePool:
    """The live instances of one service."""

    def __init__(self, service: str, channel_factory: ChannelFactory = aio_channel) -> None:
        self.service = service
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
                self._instances[instance_id] = Instance(endpoint, self._channel_factory)
                log.info("instance added", service=self.service, address=endpoint.address)

    def pick(self, exclude: frozenset[str] = frozenset()) -> Instance | None:
        """Power of two choices on in-flight calls, skipping `exclude` addresses."""
        choices = [i for i in self._instances.values() if i.address not in exclude] if exclude else self.instances()
        if not choices:
            return None
        if len(choices) == 1:
            return choices[0]
        first, second = random.sample(choices, 2)
        return first if first.in_flight <= second.in_flight else second

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


class Balancer:
    """Instance pools for every service, fed by discovery."""

    def __init__(self, discovery: Discovery, *, channel_factory: ChannelFactory = aio_channel) -> None:
        self._pools: dict[str, InstancePool] = {}
        self._channel_factory = channel_factory
        discovery.subscribe(self._on_change)

    def _on_change(self, service: str, endpoints: tuple[Endpoint, ...]) -> None:
        self.pool(service).update(endpoints)

    def pool(self, service: str) -> InstancePool:
        pool = self._pools.get(service)
        if pool is None:
            pool = self._pools[service] = InstancePool(service, self._channel_factory)
        return pool

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
