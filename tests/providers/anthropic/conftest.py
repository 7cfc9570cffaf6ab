"""One fake Anthropic API and one adapter process per test module; the fake's script resets per test."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from services.common.processes import ServiceProcess, start_service
from services.testing.fake_anthropic import FakeAnthropic

GOLDEN_DIR = Path(__file__).parent / "golden"
DEFAULT_MAX_TOKENS = 1024
#: The model the adapter is told takes adaptive thinking.
ADAPTIVE_MODEL = "claude-opus-4-8"


@pytest.fixture(scope="module")
def api_key() -> str:
    return f"test-key-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def fake(api_key: str) -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=api_key).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def adapter(fake: FakeAnthropic, api_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_service(
        ["-m", "services.providers.anthropic"],
        name="anthropic-adapter",
        workdir=tmp_path_factory.mktemp("anthropic-adapter"),
        env={
            "ANTHROPIC_API_KEY": api_key,
            "LLMMESH_ANTHROPIC_BASE_URL": fake.url,
            "LLMMESH_ANTHROPIC_DEFAULT_MAX_TOKENS": str(DEFAULT_MAX_TOKENS),
            # Debug logs make "the key never reaches the log" a real check.
            "LLMMESH_LOG_LEVEL": "debug",
            "LLMMESH_MODELS": "",
            "LLMMESH_ANTHROPIC_ADAPTIVE_THINKING_MODELS": f"{ADAPTIVE_MODEL}",
        },
    )
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def stub(adapter: ServiceProcess) -> Iterator[provider_service_pb2_grpc.ProviderServiceStub]:
    with grpc.insecure_channel(adapter.address) as channel:
        yield provider_service_pb2_grpc.ProviderServiceStub(channel)


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


def text_message(role: chat_pb2.Role.ValueType, text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, content=[chat_pb2.ContentPart(text=text)])


def user(text: str) -> chat_pb2.Message:
    return text_message(chat_pb2.ROLE_USER, text)


def assert_golden(name: str, body: Any) -> None:
    """Compares the JSON body the fake received with golden/<name>.json; LLMMESH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN_DIR / f"{name}.json"
    rendered = json.dumps(body, indent=2, sort_keys=True) + "\n"
    if os.environ.get("LLMMESH_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered)
    assert path.exists(), f"{path} is missing; run with LLMMESH_UPDATE_GOLDEN=1 to create it"
    assert rendered == path.read_text(), f"mapped request differs from {path}; LLMMESH_UPDATE_GOLDEN=1 to accept"
