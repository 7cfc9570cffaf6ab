"""No secret leaks: the whole mesh with known keys, checked in every log, every error and the mock events.

Router (auth on, internal token) → mock and the three SDK adapters pointed at
their loopback fakes, all logging at debug. The calls cover successes,
upstream errors (401/429/500) and refused callers; afterwards every process
is stopped (logs flushed) and no key may appear anywhere it can be seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.testing import fake_anthropic as fa
from services.testing import fake_google as fg
from services.testing import fake_openai as fo
from tests.security.helpers import INTERNAL_TOKEN, KEY_ALPHA, KEY_UNKNOWN, bearer, write_tenants

OPENAI_KEY = "sk-secrets-test-openai-9f8e7d6c5b4a"
ANTHROPIC_KEY = "sk-ant-secrets-test-1a2b3c4d5e6f"
GOOGLE_KEY = "AIza-secrets-test-google-0q9w8e7r"
SECRETS = [OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY, KEY_ALPHA, KEY_UNKNOWN, INTERNAL_TOKEN]

ROUTING = {
    "providers": {
        "openai": {"kind": "openai"},
        "anthropic": {"kind": "anthropic"},
        "google": {"kind": "google"},
        "mock": {"kind": "mock"},
    },
    "models": {
        "gpt-4o-mini": {"provider": "openai"},
        "claude-haiku-4-5": {"provider": "anthropic"},
        "gemini-2.5-flash": {"provider": "google"},
        "mock-small": {"provider": "mock"},
    },
}


@dataclass
class FullMesh:
    workdir: Path
    openai: fo.FakeOpenAI
    anthropic: fa.FakeAnthropic
    google: fg.FakeGemini
    router: ServiceProcess
    adapters: list[ServiceProcess]
    errors: list[str] = field(default_factory=list)

    @property
    def processes(self) -> list[ServiceProcess]:
        return [self.router, *self.adapters]


@pytest.fixture(scope="module")
def full_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullMesh]:
    workdir = tmp_path_factory.mktemp("secrets")
    openai = fo.FakeOpenAI(expected_key=OPENAI_KEY).start()
    anthropic = fa.FakeAnthropic(api_key=ANTHROPIC_KEY).start()
    google = fg.FakeGemini(api_key=GOOGLE_KEY).start()
    common = {"LLMMESH_LOG_LEVEL": "debug", "LLMMESH_INTERNAL_TOKEN": INTERNAL_TOKEN}
    specs = [
        (
            "openai",
            {"OPENAI_API_KEY": OPENAI_KEY, "LLMMESH_OPENAI_BASE_URL": openai.url, "LLMMESH_MODELS": "gpt-4o-mini"},
        ),
        (
            "anthropic",
            {
                "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                "LLMMESH_ANTHROPIC_BASE_URL": anthropic.url,
                "LLMMESH_MODELS": "claude-haiku-4-5",
            },
        ),
        (
            "google",
            {
                "GEMINI_API_KEY": GOOGLE_KEY,
                "GOOGLE_API_KEY": "",
                "LLMMESH_GOOGLE_BASE_URL": google.url,
                "LLMMESH_MODELS": "gemini-2.5-flash",
            },
        ),
        ("mock", {"LLMMESH_MOCK_EVENTS_FILE": str(workdir / "mock-events.jsonl")}),
    ]
    adapters: list[ServiceProcess] = []
    try:
        for kind, env in specs:
            adapters.append(
                start_service(["-m", f"services.providers.{kind}"], name=kind, workdir=workdir, env={**common, **env})
            )
        (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
        (workdir / "static.yaml").write_text(
            yaml.safe_dump(
                {
                    "services": {
                        f"llmmesh-provider-{kind}": [p.address] for (kind, _), p in zip(specs, adapters, strict=True)
                    }
                }
            )
        )
        tenants = write_tenants(
            workdir / "tenants.yaml", [{"name": "alpha", "keys": [KEY_ALPHA], "allowed_models": ["*"]}]
        )
        router = start_service(
            ["-m", "services.router"],
            name="router",
            workdir=workdir,
            env={
                **common,
                "LLMMESH_AUTH_FILE": str(tenants),
                "LLMMESH_ROUTING_FILE": str(workdir / "routing.yaml"),
                "LLMMESH_STATIC_DISCOVERY_FILE": str(workdir / "static.yaml"),
            },
        )
    except BaseException:
        for process in adapters:
            process.kill()
        for fake in (openai, anthropic, google):
            fake.stop()
        raise
    mesh = FullMesh(workdir, openai, anthropic, google, router, adapters)
    yield mesh
    for process in mesh.processes:
        process.kill()
    for fake in (openai, anthropic, google):
        fake.stop()


def _request(model: str) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hello")])]
    )


async def _calls(mesh: FullMesh, model: str, key: str, count: int) -> None:
    """`count` unary calls and one stream; every error message is kept for the leak check."""
    async with grpc.aio.insecure_channel(mesh.router.address) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        for _ in range(count):
            try:
                await stub.Chat(_request(model), timeout=10, metadata=bearer(key))
            except grpc.aio.AioRpcError as error:
                mesh.errors.append(f"{error.code().name}: {error.details()} {error.trailing_metadata()}")
        try:
            async for _ in stub.StreamChat(
                rpb.StreamChatRequest(model=model, messages=_request(model).messages), timeout=10, metadata=bearer(key)
            ):
                pass
        except grpc.aio.AioRpcError as error:
            mesh.errors.append(f"{error.code().name}: {error.details()} {error.trailing_metadata()}")


class TestNoSecretLeaks:
    async def test_successes_errors_and_refusals_leak_nothing(self, full_mesh: FullMesh) -> None:
        """After successes, upstream 401/429/500s and refused callers, no key is in any log, error or event."""
        full_mesh.openai.script(
            fo.Reply.json(fo.completion("ok")),
            fo.Reply.json(
                fo.error_body("Incorrect API key provided", type="invalid_request_error", code="invalid_api_key"),
                status=401,
            ),
            fo.Reply.json(fo.error_body("Rate limit", type="requests", code="rate_limit_exceeded"), status=429),
        )
        full_mesh.anthropic.script(
            fa.json_reply(fa.message(text="ok")),
            fa.error_reply(401, "authentication_error", "invalid x-api-key"),
            fa.error_reply(500, "api_error", "Internal server error"),
        )
        full_mesh.google.script(
            fg.Reply(body=fg.response([fg.text_part("ok")])),
            fg.Reply(status=400, body=fg.bad_key_body()),
            fg.error_reply(500),
        )
        for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "mock-small"):
            await _calls(full_mesh, model, KEY_ALPHA, 3)
        await _calls(full_mesh, "mock-small", KEY_UNKNOWN, 1)
        # Upstream failures and the refused caller did produce error messages to check.
        assert len(full_mesh.errors) >= 6

        for process in full_mesh.processes:
            process.terminate()
        seen = {f"{process.name} log": process.log() for process in full_mesh.processes}
        seen["error messages"] = "\n".join(full_mesh.errors)
        events = full_mesh.workdir / "mock-events.jsonl"
        seen["mock events"] = events.read_text() if events.exists() else ""
        assert seen["mock events"], "the mock recorded no events"
        leaks = [(where, secret[:8] + "…") for where, text in seen.items() for secret in SECRETS if secret in text]
        assert leaks == []
