"""Consul as the discovery backend: adapters and tools register, routers watch.

- `client`: py-consul on an httpx2 transport, with explicit timeouts.
- `registration`: register with a gRPC health check, deregister on SIGTERM
  before draining, register again when the agent forgets (anti-entropy).
- `watch`: `ConsulDiscovery`, blocking queries on /v1/health/service/<name>?passing,
  stale-but-serving through Consul outages.
"""

from services.common.consul_discovery.client import ConsulSettings, consul_client
from services.common.consul_discovery.registration import ConsulRegistration
from services.common.consul_discovery.watch import ConsulDiscovery

__all__ = ["ConsulDiscovery", "ConsulRegistration", "ConsulSettings", "consul_client"]
