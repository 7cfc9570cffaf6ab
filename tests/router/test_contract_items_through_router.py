"""Issue 17's contract items end to end: the router in front of the three real adapters, each on its
official SDK against its loopback fake upstream.

The upstream response id on unary answers and stream finals; refusals as
`Message.refusal` / `ChatDelta.refusal` with FINISH_REASON_REFUSAL; tool
choice limited to a subset of tools and `parallel_tool_calls`; log
probabilities where the provider returns them, refused by name where not;
citations (OpenAI url_citation annotations, Anthropic text-block citations,
Gemini grounding metadata) as the same Citation, and left out of history sent
on, as each provider's wire format says; prompt-cache breakpoints, keys and
explicit caches, with the cache counts and their prices.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.testing import fake_anthropic as fa
from services.testing import fake_google as fg
from services.testing import fake_openai as fo
from services.testing.mesh import start_router

KEY = f"test-key-{secrets.token_hex(8)}"
GPT, CLAUDE, GEMINI = "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"
ROUTING = {
    "providers": {"openai": {"kind": "openai"}, "anthropic": {"kind": "anthropic"}, "google": {"kind": "google"}},
    "defaults": {"max_retries": 0},
    "models": {
        GPT: {"provider": "openai"},
        CLAUDE: {"provider": "anthropic"},
        GEMINI: {"provider": "google"},
        "gemini-then-gpt": {"provider": "google", "upstream_model": GEMINI, "fallbacks": [GPT]},
        "claude-then-gemini": {"provider": "anthropic", "upstream_model": CLAUDE, "fallbacks": [GEMINI]},
        # Dollars per million tokens, cache reads and writes at their own rates (1.25x input for 5m writes).
        "claude-priced": {
            "provider": "anthropic",
            "upstream_model": CLAUDE,
            "price": {
                "input_per_mtok": 1.0,
                "output_per_mtok": 5.0,
                "cached_input_per_mtok": 0.1,
                "cache_write_per_mtok": 1.25,
            },
        },
    },
}


class Fakes:
    def __init__(self) -> None:
        self.openai = fo.FakeOpenAI(expected_key=KEY).start()
        self.anthropic = fa.FakeAnthropic(api_key=KEY).start()
        self.google = fg.FakeGemini(api_key=KEY).start()

    def stop(self) -> None:
        for fake in (self.openai, self.anthropic, self.google):
            fake.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    started = Fakes()
    yield started
    started.stop()


def _adapters(fakes: Fakes) -> list[tuple[str, dict[str, str]]]:
    return [
        ("openai", {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fakes.openai.url, "LLMMESH_OPENAI_BASE_URL": ""}),
        ("anthropic", {"ANTHROPIC_API_KEY": KEY, "LLMMESH_ANTHROPIC_BASE_URL": fakes.anthropic.url}),
        ("google", {"GEMINI_API_KEY": KEY, "GOOGLE_API_KEY": "", "LLMMESH_GOOGLE_BASE_URL": fakes.google.url}),
    ]


@pytest.fixture(scope="module")
def router(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("contract-items-router")
    started: list[ServiceProcess] = []
    try:
        static = {}
        for kind, env in _adapters(fakes):
            process = start_service(["-m", f"services.providers.{kind}"], name=kind, workdir=workdir, env=env)
            started.append(process)
            static[f"llmmesh-provider-{kind}"] = [process.address]
        started.append(start_router(workdir, ROUTING, static))
        yield started[-1]
    finally:
        for process in reversed(started):
            process.terminate()


@pytest.fixture
async def stub(router: ServiceProcess) -> AsyncIterator[router_service_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


async def _stream(stub: Any, request: rpb.StreamChatRequest) -> list[rpb.StreamChatResponse]:
    return [event async for event in stub.StreamChat(request, timeout=20)]


def _script_text(fakes: Fakes, model: str, *, stream: bool) -> None:
    """One plain answer from `model`'s fake, with the fake's own response id."""
    if model == GPT:
        fakes.openai.script(fo.Reply.stream(fo.text_stream(["Hi"])) if stream else fo.Reply.json(fo.completion("Hi")))
    elif model == CLAUDE:
        body = fa.message(text="Hi")
        fakes.anthropic.script(fa.sse_reply(fa.stream_events(body)) if stream else fa.json_reply(body))
    else:
        fakes.google.script(
            fg.Reply(events=fg.text_stream(["Hi"])) if stream else fg.Reply(body=fg.response([fg.text_part("Hi")]))
        )


UPSTREAM_IDS = {
    (GPT, False): "chatcmpl-fake1",
    (GPT, True): "chatcmpl-fake2",
    (CLAUDE, False): "msg_fake_01",
    (CLAUDE, True): "msg_fake_01",
    (GEMINI, False): "resp-1",
    (GEMINI, True): "resp-1",
}


class TestResponseId:
    @pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
    async def test_unary_and_stream_carry_the_upstream_response_id(self, stub, fakes, model: str) -> None:
        """Every provider's own response id reaches the caller on the unary answer and on the stream final."""
        _script_text(fakes, model, stream=False)
        unary = await stub.Chat(rpb.ChatRequest(model=model, messages=[_user("Hi")]), timeout=20)
        assert unary.response_id == UPSTREAM_IDS[(model, False)]
        _script_text(fakes, model, stream=True)
        events = await _stream(stub, rpb.StreamChatRequest(model=model, messages=[_user("Hi")]))
        assert events[-1].final.response_id == UPSTREAM_IDS[(model, True)]


class TestRefusals:
    async def test_openai_refusal_unary_and_stream(self, stub, fakes) -> None:
        """OpenAI's `refusal` is Message.refusal (streams: refusal deltas) with FINISH_REASON_REFUSAL."""
        fakes.openai.script(fo.Reply.json(fo.completion(None, refusal="No.")))
        unary = await stub.Chat(rpb.ChatRequest(model=GPT, messages=[_user("Bad")]), timeout=20)
        assert (unary.message.refusal, unary.finish_reason) == ("No.", chat_pb2.FINISH_REASON_REFUSAL)
        fakes.openai.script(fo.Reply.stream(fo.refusal_stream(["N", "o."])))
        events = await _stream(stub, rpb.StreamChatRequest(model=GPT, messages=[_user("Bad")]))
        assert "".join(event.delta.refusal for event in events[:-1]) == "No."
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_REFUSAL

    async def test_anthropic_refusal_unary_and_stream(self, stub, fakes) -> None:
        """Anthropic's stop_reason "refusal": its explanation as Message.refusal / one refusal delta."""
        details = {"type": "refusal", "category": "cyber", "explanation": "Could enable malware."}
        body = fa.message(text="Sure, here", stop_reason="refusal", stop_details=details)
        fakes.anthropic.script(fa.json_reply(body))
        unary = await stub.Chat(rpb.ChatRequest(model=CLAUDE, messages=[_user("Bad")]), timeout=20)
        assert (unary.message.refusal, unary.finish_reason) == ("Could enable malware.", chat_pb2.FINISH_REASON_REFUSAL)
        assert unary.message.content[0].text == "Sure, here"
        fakes.anthropic.script(fa.sse_reply(fa.stream_events(body)))
        events = await _stream(stub, rpb.StreamChatRequest(model=CLAUDE, messages=[_user("Bad")]))
        assert [event.delta.refusal for event in events[:-1] if event.delta.refusal] == ["Could enable malware."]
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_REFUSAL

    async def test_refusal_from_one_provider_goes_to_the_next_as_history(self, stub, fakes) -> None:
        """An OpenAI refusal sent back to Gemini becomes the model turn's text; back to OpenAI, its `refusal`."""
        fakes.openai.script(fo.Reply.json(fo.completion(None, refusal="No.")))
        refused = await stub.Chat(rpb.ChatRequest(model=GPT, messages=[_user("Bad")]), timeout=20)
        history = [_user("Bad"), refused.message, _user("Something else")]
        fakes.google.script(fg.Reply(body=fg.response([fg.text_part("Sure.")])))
        await stub.Chat(rpb.ChatRequest(model=GEMINI, messages=history), timeout=20)
        assert fakes.google.requests[0].body["contents"][1] == {"role": "model", "parts": [{"text": "No."}]}
        fakes.openai.script(fo.Reply.json(fo.completion("Sure.")))
        await stub.Chat(rpb.ChatRequest(model=GPT, messages=history), timeout=20)
        assert fakes.openai.chat_requests[-1].body["messages"][1] == {"role": "assistant", "refusal": "No."}


def _tools() -> list[chat_pb2.ToolDefinition]:
    return [chat_pb2.ToolDefinition(name="get_weather"), chat_pb2.ToolDefinition(name="get_time")]


class TestToolChoiceLimits:
    async def test_no_parallel_calls_moves_from_gemini_to_openai(self, stub, fakes) -> None:
        """Gemini cannot turn parallel calls off: the router moves on, and OpenAI gets parallel_tool_calls false
        and its allowed_tools choice; nothing reached Gemini."""
        fakes.google.script()
        fakes.openai.script(fo.Reply.json(fo.completion("ok")))
        choice = chat_pb2.ToolChoice(
            mode=chat_pb2.TOOL_CHOICE_MODE_AUTO, allowed_tools=["get_time"], parallel_tool_calls=False
        )
        request = rpb.ChatRequest(
            model="gemini-then-gpt", messages=[_user("Time?")], tools=_tools(), tool_choice=choice
        )
        response = await stub.Chat(request, timeout=20)
        assert response.model == GPT
        assert response.attempts[0].moved_on_because == "google cannot serve tool_choice.parallel_tool_calls"
        assert fakes.google.requests == []
        body = fakes.openai.chat_requests[-1].body
        assert body["parallel_tool_calls"] is False
        assert body["tool_choice"]["allowed_tools"]["tools"] == [{"type": "function", "function": {"name": "get_time"}}]

    @pytest.mark.parametrize("model", [CLAUDE, GEMINI])
    async def test_allowed_tools_on_a_stream(self, stub, fakes, model: str) -> None:
        """A stream limited to some tools reaches Anthropic as only those tools, Gemini as allowedFunctionNames."""
        _script_text(fakes, model, stream=True)
        choice = chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_REQUIRED, allowed_tools=["get_time"])
        request = rpb.StreamChatRequest(model=model, messages=[_user("Time?")], tools=_tools(), tool_choice=choice)
        events = await _stream(stub, request)
        assert events[-1].HasField("final")
        if model == CLAUDE:
            body = fakes.anthropic.requests[-1].body
            assert ([tool["name"] for tool in body["tools"]], body["tool_choice"]) == (["get_time"], {"type": "any"})
        else:
            config = fakes.google.requests[-1].body["toolConfig"]["functionCallingConfig"]
            assert config == {"mode": "ANY", "allowedFunctionNames": ["get_time"]}

    async def test_unknown_allowed_tool_is_refused_before_any_attempt(self, stub, fakes) -> None:
        """An allowed tool not in tools is INVALID_ARGUMENT naming tool_choice.allowed_tools[i]."""
        choice = chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_AUTO, allowed_tools=["get_time", "nope"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(
                rpb.ChatRequest(model=GPT, messages=[_user("Hi")], tools=_tools(), tool_choice=choice), timeout=20
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tool_choice.allowed_tools[1]" in (caught.value.details() or "")


class TestLogprobs:
    async def test_anthropic_refuses_and_gemini_answers_with_logprobs(self, stub, fakes) -> None:
        """Anthropic has no log probabilities: the router moves on to Gemini, whose logprobsResult reaches the
        caller as Message.logprobs (unary) and ChatDelta.logprobs (stream)."""
        fakes.anthropic.reset()
        steps = [("Hi", -0.5, {"Hi": -0.5, "Yo": -1.5})]
        fakes.google.script(fg.Reply(body=fg.response([fg.text_part("Hi")], logprobs=steps)))
        settings = chat_pb2.GenerationSettings(logprobs=True, top_logprobs=2)
        request = rpb.ChatRequest(model="claude-then-gemini", messages=[_user("Hi")], settings=settings)
        response = await stub.Chat(request, timeout=20)
        assert response.model == GEMINI
        assert response.attempts[0].moved_on_because == "anthropic cannot serve settings.logprobs"
        assert fakes.anthropic.requests == []
        assert [(t.token, t.logprob, len(t.top_logprobs)) for t in response.message.logprobs] == [("Hi", -0.5, 2)]
        stream = [fg.response([fg.text_part("Hi")], usage_metadata=fg.usage(2, 1), logprobs=steps)]
        fakes.google.script(fg.Reply(events=stream))
        events = await _stream(stub, rpb.StreamChatRequest(model=GEMINI, messages=[_user("Hi")], settings=settings))
        assert [t.token for event in events[:-1] for t in event.delta.logprobs] == ["Hi"]

    async def test_openai_logprobs_unary_and_stream(self, stub, fakes) -> None:
        """OpenAI's logprobs.content, bytes included, reach the caller through the router."""
        fakes.openai.script(fo.Reply.json(fo.completion("Hi", logprobs=[fo.token_logprob("Hi", -0.25)])))
        settings = chat_pb2.GenerationSettings(logprobs=True)
        response = await stub.Chat(rpb.ChatRequest(model=GPT, messages=[_user("Hi")], settings=settings), timeout=20)
        assert [(t.token, t.token_bytes) for t in response.message.logprobs] == [("Hi", b"Hi")]
        chunks = [
            fo.chunk(role="assistant", content=""),
            fo.chunk(content="Hi", logprobs=[fo.token_logprob("Hi", -0.25)]),
            fo.chunk(finish_reason="stop"),
            fo.chunk(no_choices=True, usage_body=fo.usage(3, 1)),
        ]
        fakes.openai.script(fo.Reply.stream(chunks))
        events = await _stream(stub, rpb.StreamChatRequest(model=GPT, messages=[_user("Hi")], settings=settings))
        assert [t.logprob for event in events[:-1] for t in event.delta.logprobs] == [-0.25]


CITED = "Paris is nice."
WEB = ("https://example.org/paris", "Paris")


def _script_cited(fakes: Fakes, model: str, *, stream: bool) -> None:
    """An answer citing WEB over "Paris" (characters 0..5), in each provider's own wire format."""
    url, title = WEB
    if model == GPT:
        annotations = [fo.url_citation(url, title, 0, 5)]
        if stream:
            events = [
                fo.chunk(role="assistant", content=""),
                fo.chunk(content="Paris"),
                fo.chunk(content=" is nice."),
                fo.chunk(annotations=annotations),
                fo.chunk(finish_reason="stop"),
                fo.chunk(no_choices=True, usage_body=fo.usage(5, 3)),
            ]
            fakes.openai.script(fo.Reply.stream(events))
        else:
            fakes.openai.script(fo.Reply.json(fo.completion(CITED, annotations=annotations)))
    elif model == CLAUDE:
        web = {"type": "web_search_result_location", "cited_text": "Paris", "encrypted_index": "E1", "title": title}
        body = fa.message(text=["Paris", " is nice."], citations={0: [{**web, "url": url}]})
        fakes.anthropic.script(fa.sse_reply(fa.stream_events(body)) if stream else fa.json_reply(body))
    else:
        grounding = fg.web_grounding([WEB], [(0, 5, [0], 0)])
        if stream:
            events = [
                fg.response([fg.text_part("Paris")], finish_reason=None),
                fg.response([fg.text_part(" is nice.")], usage_metadata=fg.usage(3, 3), grounding=grounding),
            ]
            fakes.google.script(fg.Reply(events=events))
        else:
            fakes.google.script(fg.Reply(body=fg.response([fg.text_part(CITED)], grounding=grounding)))


class TestCitations:
    @pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
    async def test_citations_unary_and_stream(self, stub, fakes, model: str) -> None:
        """Each provider's citations reach the caller as the same Citation, on the answer and on the stream
        (in a delta after the text it spans)."""
        _script_cited(fakes, model, stream=False)
        unary = await stub.Chat(rpb.ChatRequest(model=model, messages=[_user("Paris?")]), timeout=20)
        [citation] = unary.message.citations
        assert (citation.kind, citation.url, citation.title) == (chat_pb2.CITATION_KIND_URL, *WEB)
        assert (citation.start_index, citation.end_index) == (0, 5)
        text = "".join(part.text for part in unary.message.content)
        assert text[citation.start_index : citation.end_index] == "Paris"
        _script_cited(fakes, model, stream=True)
        events = await _stream(stub, rpb.StreamChatRequest(model=model, messages=[_user("Paris?")]))
        streamed = [c for event in events[:-1] for c in event.delta.citations]
        assert streamed == [citation]
        first_cited = next(i for i, event in enumerate(events) if event.delta.citations)
        assert len("".join(event.delta.text for event in events[:first_cited])) >= citation.end_index
        assert "".join(event.delta.text for event in events[:-1]) == CITED

    async def test_cited_answer_goes_to_the_next_provider_without_its_citations(self, stub, fakes) -> None:
        """A Gemini answer with citations, sent back as history to Anthropic and OpenAI, goes as its text only."""
        _script_cited(fakes, GEMINI, stream=False)
        cited = await stub.Chat(rpb.ChatRequest(model=GEMINI, messages=[_user("Paris?")]), timeout=20)
        assert cited.message.citations
        history = [_user("Paris?"), cited.message, _user("More?")]
        fakes.anthropic.script(fa.json_reply(fa.message(text="More.")))
        await stub.Chat(rpb.ChatRequest(model=CLAUDE, messages=history), timeout=20)
        sent = fakes.anthropic.requests[-1].body["messages"][1]
        assert sent == {"role": "assistant", "content": [{"type": "text", "text": CITED}]}
        fakes.openai.script(fo.Reply.json(fo.completion("More.")))
        await stub.Chat(rpb.ChatRequest(model=GPT, messages=history), timeout=20)
        assert fakes.openai.chat_requests[-1].body["messages"][1] == {"role": "assistant", "content": CITED}


def _breakpoint_request(cls: Any, model: str, **fields: Any) -> Any:
    system = chat_pb2.Message(
        role=chat_pb2.ROLE_SYSTEM,
        content=[chat_pb2.ContentPart(text="The handbook.", cache_control=chat_pb2.CacheControl())],
    )
    return cls(model=model, messages=[system, _user("What is X?")], **fields)


class TestPromptCache:
    async def test_anthropic_breakpoints_and_cache_priced_at_its_own_rates(self, stub, fakes) -> None:
        """The system prompt's breakpoint reaches Anthropic as a cache_control text block; cache writes and
        reads come back in usage and are priced at the routing file's cache rates, unary and streamed."""
        body = fa.message(text="Y.", usage_=fa.usage(100, 10, cache_read=200_000, cache_creation=400_000))
        fakes.anthropic.script(fa.json_reply(body))
        response = await stub.Chat(_breakpoint_request(rpb.ChatRequest, "claude-priced"), timeout=20)
        sent = fakes.anthropic.requests[-1].body
        assert sent["system"] == [{"type": "text", "text": "The handbook.", "cache_control": {"type": "ephemeral"}}]
        usage = response.usage
        assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_input_tokens) == (
            600_100,
            200_000,
            400_000,
        )
        # 100 x 1.0 + 200,000 x 0.1 + 400,000 x 1.25 + 10 x 5.0, per million.
        assert response.estimated_cost_usd == pytest.approx(0.52015)
        fakes.anthropic.script(fa.sse_reply(fa.stream_events(body)))
        events = await _stream(stub, _breakpoint_request(rpb.StreamChatRequest, "claude-priced"))
        final = events[-1].final
        assert final.usage.cache_write_input_tokens == 400_000
        assert final.estimated_cost_usd == pytest.approx(0.52015)

    async def test_explicit_cache_moves_from_anthropic_to_gemini(self, stub, fakes) -> None:
        """settings.prompt_cache.cached_content: Anthropic cannot serve it, Gemini answers from the cache."""
        fakes.anthropic.reset()
        fakes.google.script(fg.Reply(body=fg.response([fg.text_part("Y.")], usage_metadata=fg.usage(50, 2, cached=40))))
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(cached_content="cachedContents/h1"))
        request = rpb.ChatRequest(model="claude-then-gemini", messages=[_user("What is X?")], settings=settings)
        response = await stub.Chat(request, timeout=20)
        assert response.model == GEMINI
        assert response.attempts[0].moved_on_because == "anthropic cannot serve settings.prompt_cache.cached_content"
        assert fakes.anthropic.requests == []
        assert fakes.google.requests[-1].body["cachedContent"] == "cachedContents/h1"
        assert response.usage.cached_input_tokens == 40

    async def test_openai_key_sent_breakpoints_served_and_cache_counts_streamed(self, stub, fakes) -> None:
        """OpenAI gets prompt_cache_key, serves the breakpoint as a no-op, and its cache counts reach the final."""
        chunks = [
            fo.chunk(role="assistant", content="Y."),
            fo.chunk(finish_reason="stop"),
            fo.chunk(no_choices=True, usage_body=fo.usage(1500, 2, cached=1024, cache_write=256)),
        ]
        fakes.openai.script(fo.Reply.stream(chunks))
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(key="faq"))
        events = await _stream(stub, _breakpoint_request(rpb.StreamChatRequest, GPT, settings=settings))
        sent = fakes.openai.chat_requests[-1].body
        assert sent["prompt_cache_key"] == "faq"
        assert sent["messages"][0] == {"role": "system", "content": "The handbook."}
        usage = events[-1].final.usage
        assert (usage.cached_input_tokens, usage.cache_write_input_tokens) == (1024, 256)

    async def test_bad_ttl_and_cache_name_are_refused_before_any_attempt(self, stub, fakes) -> None:
        """An unknown TTL or a cached_content that is no cache name: INVALID_ARGUMENT naming the field."""
        fakes.anthropic.reset()
        request = _breakpoint_request(rpb.ChatRequest, CLAUDE)
        request.messages[0].content[0].cache_control.ttl = 7  # type: ignore[assignment]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(request, timeout=20)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "messages[0].content[0].cache_control.ttl" in (caught.value.details() or "")
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(cached_content="handbook"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(rpb.ChatRequest(model=GEMINI, messages=[_user("Hi")], settings=settings), timeout=20)
        assert "settings.prompt_cache.cached_content" in (caught.value.details() or "")
        assert fakes.anthropic.requests == []
