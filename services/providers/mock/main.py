"""Builds the mock adapter from LLMMESH_MOCK_* settings."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import load_settings
from services.common.yamlconfig import load_packaged_yaml_model, load_yaml_model
from services.providers.mock.adapter import MockAdapter
from services.providers.mock.config import MockConfig
from services.providers.runner import ProviderSettings, run_provider


class MockSettings(ProviderSettings):
    """Mock-only settings."""

    mock_config: str = Field("", description="YAML file of models, latency, failures, scripts.")
    mock_events_file: str = Field("", description="Append a JSON line per call event here (tests).")


def build_mock_adapter(_: ProviderSettings) -> MockAdapter:
    settings = load_settings(MockSettings)
    config = (
        load_yaml_model(MockConfig, settings.mock_config)
        if settings.mock_config
        else load_packaged_yaml_model(MockConfig, "services.providers.mock", "default.yaml")
    )
    return MockAdapter(config, events_file=settings.mock_events_file, instance=settings.provider_instance or "mock")


def main() -> None:
    run_provider("mock", build_mock_adapter)
