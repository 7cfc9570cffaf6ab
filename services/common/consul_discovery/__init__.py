"""Consul as the discovery backend: adapters and tools register, routers watch.

- `client`: py-consul on an httpx2 transport, with explicit timeouts.
- `registration`: register with a gRPC health check, deregister on SIGTERM
  before draining, register again when the agent forgets (anti-entropy).
- `watch`: `ConsulDiscovery`, blocking queries on /v1/health/service/<name>?passing,
  stale-but-serving through Consul outages.

Import from the submodules: a router loads only `watch`, an adapter only
`registration`, so each process reads (and its manifests carry) only its own settings.
"""
