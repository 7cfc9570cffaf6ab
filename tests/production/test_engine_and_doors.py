"""Later features in the production shape: the engine's outcome rules, the door's limits and its Responses API."""

from __future__ import annotations

import json
import socket

import grpc
import openai
import pytest
from google.protobuf.duration_pb2 import Duration

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing import fake_anthropic, fake_openai
from services.testing.production import ProductionMesh
from tests.production.helpers import MODELS, chat, script_text, stream_chat

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]


def _router(channel: grpc.Channel) -> router_service_pb2_grpc.RouterServiceStub:
    return router_service_pb2_grpc.RouterServiceStub(channel)


class TestOutcomeRules:
    def test_content_filtered_answer_falls_back_when_the_policy_allows(self, mesh: ProductionMesh) -> None:
        """OpenAI's 200 ending in content_filter moves on to the prod fallback (Claude) under the request's policy."""
        mesh.openai.script(fake_openai.Reply.json(fake_openai.completion("", finish_reason="content_filter")))
        script_text(mesh, "anthropic", "a filtered answer was replaced")
        policy = rpb.RoutingPolicy(fallback_on_content_filter=True)
        with mesh.channel() as channel:
            response = _router(channel).Chat(chat(MODELS["openai"], routing=policy), timeout=30, metadata=mesh.caller())
        assert response.model == MODELS["anthropic"]
        assert response.message.content[0].text.strip() == "a filtered answer was replaced"
        assert [a.provider for a in response.attempts] == ["openai", "anthropic"]

    def test_stream_asking_for_hedge_is_refused_naming_the_field(self, mesh: ProductionMesh) -> None:
        """Streams try one candidate at a time: HEDGE is refused with the field named, and nothing reaches a provider."""
        policy = rpb.RoutingPolicy(strategy=rpb.ROUTING_STRATEGY_HEDGE)
        with mesh.channel() as channel, pytest.raises(grpc.RpcError) as refused:
            list(
                _router(channel).StreamChat(
                    stream_chat(MODELS["openai"], routing=policy), timeout=30, metadata=mesh.caller()
                )
            )
        error = MeshError.from_rpc_error(refused.value)  # type: ignore[arg-type]
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "routing.strategy" in error.message
        assert mesh.openai.chat_requests == []

    def test_slow_first_token_moves_on_within_the_deadline(self, mesh: ProductionMesh) -> None:
        """A stream whose first token is later than first_token_timeout falls back before anything reached the caller."""
        words = ["late ", "answer "]
        mesh.openai.script(fake_openai.Reply.stream(fake_openai.text_stream(words), delay=3.0))
        script_text(mesh, "anthropic", "the quick one", stream=True)
        policy = rpb.RoutingPolicy(first_token_timeout=Duration(nanos=500_000_000))
        with mesh.channel() as channel:
            events = list(
                _router(channel).StreamChat(
                    stream_chat(MODELS["openai"], routing=policy), timeout=30, metadata=mesh.caller()
                )
            )
        text = "".join(e.delta.text for e in events if e.HasField("delta"))
        assert text.strip() == "the quick one"
        assert events[-1].final.model == MODELS["anthropic"]


class TestHttpDoorHolds:
    def test_oversized_header_is_refused_and_grpc_still_answers(self, mesh: ProductionMesh) -> None:
        """A 1 MiB header gets 431 and a closed connection; the same router keeps answering gRPC."""
        host, port = mesh.http_url(0).removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as attacker:
            attacker.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
            status_line = attacker.recv(64).split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 431"), status_line
        with mesh.channel() as channel:
            response = _router(channel).Chat(chat(MODELS["mock"]), timeout=30, metadata=mesh.caller())
        assert response.model == MODELS["mock"]


class TestResponsesApi:
    def _client(self, mesh: ProductionMesh) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{mesh.http_url(1)}/v1", api_key=mesh.tenant_keys["team-a"], max_retries=0)

    def test_unary(self, mesh: ProductionMesh) -> None:
        """client.responses.create through the door reaches Gemini on its SDK, with auth, TLS and quotas on."""
        script_text(mesh, "google", "responses answer")
        response = self._client(mesh).responses.create(model=MODELS["google"], input="hi", timeout=30)
        assert response.output_text.strip() == "responses answer"
        assert response.model == MODELS["google"]

    def test_stream(self, mesh: ProductionMesh) -> None:
        """A streamed Responses call ends in response.completed with the whole text."""
        script_text(mesh, "anthropic", "streamed responses answer", stream=True)
        stream = self._client(mesh).responses.create(model=MODELS["anthropic"], input="hi", stream=True, timeout=30)
        events = list(stream)
        assert events[0].type == "response.created"
        assert events[-1].type == "response.completed"
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas.strip() == "streamed responses answer"


class TestEmbeddings:
    def test_grpc_embed_on_openai(self, mesh: ProductionMesh) -> None:
        """Embed through the router to the OpenAI adapter on its SDK: one vector per input, usage counted."""
        mesh.openai.script(fake_openai.Reply.embeddings(dimensions=16))
        with mesh.channel() as channel:
            response = _router(channel).Embed(
                rpb.EmbedRequest(model="text-embedding-3-small", inputs=["a", "b"], dimensions=16),
                timeout=30,
                metadata=mesh.caller(),
            )
        assert [len(e.values) for e in response.embeddings] == [16, 16]
        assert response.model == "text-embedding-3-small"
        assert response.usage.input_tokens > 0

    def test_http_door_embeddings_with_the_openai_sdk(self, mesh: ProductionMesh) -> None:
        """client.embeddings.create through the door (the SDK's default base64 wire) reaches the OpenAI adapter."""
        mesh.openai.script(fake_openai.Reply.embeddings(dimensions=8))
        client = openai.OpenAI(base_url=f"{mesh.http_url(0)}/v1", api_key=mesh.tenant_keys["team-b"], max_retries=0)
        response = client.embeddings.create(
            model="text-embedding-3-small", input=["x", "y", "z"], dimensions=8, timeout=30
        )
        assert [len(item.embedding) for item in response.data] == [8, 8, 8]
        assert len(mesh.openai.embedding_requests) == 1


class TestStructuredOutput:
    def test_strict_flags_reach_openai_from_the_door(self, mesh: ProductionMesh) -> None:
        """`strict` on a door tool and on a JSON schema reach OpenAI's request as its own strict flags."""
        mesh.openai.script(fake_openai.Reply.json(fake_openai.completion('{"city": "Paris"}')))
        schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        client = openai.OpenAI(base_url=f"{mesh.http_url(0)}/v1", api_key=mesh.tenant_keys["team-a"], max_retries=0)
        client.chat.completions.create(
            model=MODELS["openai"],
            messages=[{"role": "user", "content": "Where?"}],
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": schema, "strict": True}}],
            response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
            timeout=30,
        )
        body = mesh.openai.chat_requests[-1].body
        assert body["tools"][0]["function"]["strict"] is True
        assert body["response_format"]["json_schema"]["strict"] is True
        # The Responses API's names for the same flags.
        mesh.openai.script(fake_openai.Reply.json(fake_openai.completion('{"city": "Oslo"}')))
        client.responses.create(
            model=MODELS["openai"],
            input="Where?",
            tools=[{"type": "function", "name": "lookup", "parameters": schema, "strict": False}],
            text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
            timeout=30,
        )
        body = mesh.openai.chat_requests[-1].body
        assert body["tools"][0]["function"]["strict"] is False
        assert body["response_format"]["json_schema"]["strict"] is True

    def test_json_object_mode_streams_from_anthropic(self, mesh: ProductionMesh) -> None:
        """JSON-object mode on Claude is a forced tool: its input streams to the caller as the answer's text."""
        answer = fake_anthropic.message(tool_calls=[("toolu_j", "json_object", {"ok": True})], stop_reason="tool_use")
        mesh.anthropic.script(fake_anthropic.Reply(events=fake_anthropic.stream_events(answer, pieces=3)))
        request = stream_chat(MODELS["anthropic"], "JSON please")
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        with mesh.channel() as channel:
            events = list(_router(channel).StreamChat(request, timeout=30, metadata=mesh.caller()))
        assert json.loads("".join(e.delta.text for e in events if e.HasField("delta"))) == {"ok": True}
        assert (events[-1].final.model, events[-1].final.finish_reason) == (
            MODELS["anthropic"],
            chat_pb2.FINISH_REASON_STOP,
        )
        assert mesh.anthropic.requests[-1].body["tool_choice"] == {"type": "tool", "name": "json_object"}


class TestCallerContext:
    def test_end_user_and_labels_reach_the_providers(self, mesh: ProductionMesh) -> None:
        """CallerContext crosses router and adapters: Anthropic's metadata.user_id, Gemini's labels."""
        caller = chat_pb2.CallerContext(user="u-prod-1", labels={"team": "search"})
        script_text(mesh, "anthropic", "for the user")
        script_text(mesh, "google", "for the labels")
        with mesh.channel() as channel:
            stub = _router(channel)
            for kind in ("anthropic", "google"):
                stub.Chat(chat(MODELS[kind], caller=caller), timeout=30, metadata=mesh.caller())
        assert mesh.anthropic.requests[-1].body["metadata"] == {"user_id": "u-prod-1"}
        assert mesh.google.requests[-1].body["labels"] == {"team": "search"}


class TestPromptCache:
    def test_door_breakpoints_reach_anthropic_and_cache_writes_are_priced(self, mesh: ProductionMesh) -> None:
        """cache_control on the door's system prompt reaches Claude as a cached text block; usage names the
        cache write, and the cost prices it at the prod routing file's cache-write rate."""
        usage = fake_anthropic.usage(10, 2, cache_creation=1_000_000)
        mesh.anthropic.script(fake_anthropic.json_reply(fake_anthropic.message(text="ok", usage_=usage)))
        client = openai.OpenAI(base_url=f"{mesh.http_url(0)}/v1", api_key=mesh.tenant_keys["team-a"], max_retries=0)
        system = {
            "role": "system",
            "content": [{"type": "text", "text": "handbook", "cache_control": {"type": "ephemeral"}}],
        }
        answer = client.chat.completions.create(
            model=MODELS["anthropic"], messages=[system, {"role": "user", "content": "hi"}], timeout=30
        )
        assert mesh.anthropic.requests[-1].body["system"] == [
            {"type": "text", "text": "handbook", "cache_control": {"type": "ephemeral"}}
        ]
        assert answer.usage is not None
        assert answer.usage.prompt_tokens_details is not None
        assert answer.usage.prompt_tokens_details.cache_write_tokens == 1_000_000
        # 10 x 1.00 + 1,000,000 x 1.25 + 2 x 5.00, per million (claude-haiku-4-5 in overlays/prod/routing.yaml).
        assert (answer.model_extra or {})["llmmesh"]["estimated_cost_usd"] == pytest.approx(1.25002, rel=1e-4)
