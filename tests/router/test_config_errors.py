"""Bad configuration files stop the process at start, naming file, line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.processes import run_to_exit

GOOD_ROUTING = """\
providers:
  mock: {kind: mock}
models:
  mock-small:
    provider: mock
"""


def _router(tmp_path: Path, routing: str = GOOD_ROUTING, static: str | None = None) -> tuple[int, str, Path]:
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(routing)
    env = {"LLMMESH_ROUTING_FILE": str(routing_file), "LLMMESH_PORT": "0", "LLMMESH_HOST": "127.0.0.1"}
    if static is not None:
        static_file = tmp_path / "static.yaml"
        static_file.write_text(static)
        env["LLMMESH_STATIC_DISCOVERY_FILE"] = str(static_file)
    result = run_to_exit(["-m", "services.router"], env=env)
    return result.returncode, result.stderr, routing_file


class TestRoutingFile:
    @pytest.mark.parametrize(
        ("routing", "line", "problem"),
        [
            (GOOD_ROUTING + "  other:\n    provider: nowhere\n", 7, "provider 'nowhere' is not under `providers`"),
            (GOOD_ROUTING + "    fallbacks: [ghost]\n", 6, "fallback 'ghost' is not a model"),
            (GOOD_ROUTING + "    context_window: lots\n", 6, "valid integer"),
            (GOOD_ROUTING + "    colour: blue\n", 6, "Extra inputs are not permitted"),
            (
                GOOD_ROUTING + "    supports_tools: false\n    capabilities: {tools: true}\n",
                7,
                "models.mock-small.capabilities.tools: says true but `supports_tools` says false; keep one of them",
            ),
            (GOOD_ROUTING + "    capabilities: {vision: maybe}\n", 6, "valid boolean"),
            (GOOD_ROUTING + "    capabilities: {max_output_tokens: -1}\n", 6, "greater than or equal to 0"),
            (
                GOOD_ROUTING + "  mock-large:\n    provider: mock\n    aliases: [mock-small]\n",
                8,
                "alias 'mock-small' is already used",
            ),
            ("providers:\n  mock: {kind: mock\nmodels: {}\n", 3, "not valid YAML"),
            (GOOD_ROUTING + "  mock-small:\n    provider: mock\n", 6, "key 'mock-small' appears twice"),
            (
                GOOD_ROUTING
                + "  vec-a:\n    provider: mock\n    dimensions: 8\n    fallbacks: [vec-b]\n"
                + "  vec-b:\n    provider: mock\n    dimensions: 4\n",
                9,
                "'vec-b' has 4 dimensions, 'vec-a' 8; an embedding model falls back only to the same dimensions",
            ),
            (
                GOOD_ROUTING + "    fallbacks: [vec]\n  vec:\n    provider: mock\n    dimensions: 8\n",
                6,
                "'mock-small' is a chat model and 'vec' an embedding model",
            ),
            (
                "providers:\n  anthropic: {kind: anthropic}\nmodels:\n  vec:\n    provider: anthropic\n"
                "    dimensions: 8\n",
                6,
                "anthropic offers no embeddings",
            ),
            (
                GOOD_ROUTING.replace("providers:\n", "providers:\n  openai: {kind: openai, continues_prefix: true}\n"),
                2,
                "only anthropic and mock adapters can continue an assistant prefix",
            ),
        ],
        ids=[
            "unknown-provider",
            "unknown-fallback",
            "wrong-type",
            "unknown-key",
            "capability-disagrees-with-legacy-flag",
            "capability-not-boolean",
            "capability-negative-tokens",
            "alias-clash",
            "yaml-syntax",
            "duplicate-key",
            "embedding-fallback-dimensions",
            "chat-falls-back-to-embedding",
            "anthropic-embeddings",
            "prefix-on-openai",
        ],
    )
    def test_router_refuses_to_start(self, tmp_path: Path, routing: str, line: int, problem: str) -> None:
        """The router exits 2 and stderr names routing file:line and the problem."""
        code, stderr, routing_file = _router(tmp_path, routing)
        assert code == 2, stderr
        assert f"{routing_file}:{line}:" in stderr
        assert problem in stderr


class TestStaticDiscoveryFile:
    def test_address_without_port(self, tmp_path: Path) -> None:
        """A static endpoint without a port stops the router with the file and line."""
        code, stderr, _ = _router(tmp_path, static="services:\n  llmmesh-provider-mock:\n    - localhost\n")
        assert code == 2
        assert f"{tmp_path / 'static.yaml'}:2:" in stderr
        assert "'localhost' is not host:port" in stderr


class TestSettings:
    def test_bad_environment_variable_is_named(self, tmp_path: Path) -> None:
        """A bad LLMMESH_* variable stops the process and names the variable."""
        result = run_to_exit(["-m", "services.router"], env={"LLMMESH_PORT": "99999"})
        assert result.returncode == 2
        assert "LLMMESH_PORT" in result.stderr

    def test_bad_mock_config(self, tmp_path: Path) -> None:
        """A mock config with failure rates above 1 is refused with its file and line."""
        config = tmp_path / "mock.yaml"
        config.write_text(
            "models:\n  - name: m\n    failures:\n      - {code: UNAVAILABLE, rate: 0.7}\n      - {code: INTERNAL, rate: 0.7}\n"
        )
        result = run_to_exit(["-m", "services.providers.mock"], env={"LLMMESH_MOCK_CONFIG": str(config)})
        assert result.returncode == 2
        assert f"{config}:2:" in result.stderr
        assert "failure rates add up to more than 1" in result.stderr
