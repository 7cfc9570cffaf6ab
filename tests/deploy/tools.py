"""Binaries the monitoring tests run: skipped outside CI when absent, a failure in CI (`CI` set)."""

from __future__ import annotations

import pytest

from services.testing import prometheus_server, redis_server


def require(name: str) -> str:
    """The path of `prometheus`, `promtool` or `redis-server`; skips (fails in CI) when it is not installed."""
    if name == "redis-server":
        found, hint = redis_server.redis_binary(), redis_server.INSTALL_HINT
    else:
        found, hint = prometheus_server.binary(name), prometheus_server.INSTALL_HINT.format(binary=name)
    if found is None:
        if prometheus_server.in_ci():
            pytest.fail(f"{hint}; CI must have it (.ci/run installs it)")
        pytest.skip(hint)
    return found
