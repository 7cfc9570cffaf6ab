"""ProductionMesh's guard against drift between the prod overlay and the topology (no processes started)."""

from __future__ import annotations

import pytest

from services.testing import production
from services.testing.production import (
    ADDED,
    OVERRIDES,
    SUBSTITUTED,
    TopologyDriftError,
    _check_overrides,
    _check_substituted,
    rendered_containers,
)


@pytest.fixture(scope="module")
def containers() -> dict[str, production.Container]:
    return rendered_containers()[0]


class TestDriftIsRefused:
    @pytest.mark.parametrize(
        "value",
        [
            "llmmesh-router:50051",
            "http://otel-collector.observability.svc.cluster.local:4317",
            "redis://llmmesh-redis.llmmesh.svc.cluster.local:6379/0",
            "https://generativelanguage.googleapis.com",
            "/etc/llmmesh/routing.yaml",
            "http://$(HOST_IP):8500",
        ],
    )
    def test_a_value_pointing_into_the_cluster_fails_the_start(self, value: str) -> None:
        """Addresses, container paths and unexpanded $(VAR) left unsubstituted are refused, naming the variable."""
        with pytest.raises(TopologyDriftError, match="LLMMESH_SOMETHING"):
            _check_substituted("llmmesh-router", {"LLMMESH_SOMETHING": value})

    def test_loopback_values_pass(self) -> None:
        """What the substitution produces is accepted."""
        _check_substituted(
            "llmmesh-router",
            {"CONSUL_HTTP_ADDR": "http://127.0.0.1:8500", "LLMMESH_QUOTA_REDIS_URL": "redis://127.0.0.1:6379/0"},
        )

    def test_an_override_the_manifests_no_longer_set_is_refused(
        self, containers: dict[str, production.Container], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An override for a renamed or removed variable would override nothing: the start says so."""
        monkeypatch.setitem(OVERRIDES, "LLMMESH_RENAMED_AWAY", production.Override("1", "test"))
        with pytest.raises(TopologyDriftError, match="LLMMESH_RENAMED_AWAY"):
            _check_overrides(containers)


class TestTheRealOverlay:
    def test_overrides_and_substitutions_name_variables_the_prod_overlay_sets(
        self, containers: dict[str, production.Container]
    ) -> None:
        """Every entry of OVERRIDES and SUBSTITUTED is a variable some prod Deployment sets; ADDED ones none sets."""
        _check_overrides(containers)
        rendered = {entry["name"] for container in containers.values() for entry in container.env}
        assert set(SUBSTITUTED) <= rendered
        assert not set(ADDED) & rendered

    def test_every_override_has_a_reason(self) -> None:
        """The table documents itself: a one-line reason per entry."""
        for name, override in {**OVERRIDES, **ADDED}.items():
            assert len(override.reason) > 20, name
