"""POST /v1/responses: OpenAI's Responses API over the same path as chat completions.

The body maps onto a router chat request (responses_request.py) and runs
through the gateway's one chat path: auth, validation, admission, deadline,
fallbacks, disconnect handling. Answers and stream events are written by
responses_output.py; errors are OpenAI error bodies whose `param` names the
Responses field (`input[2].content[0].text`, `max_output_tokens`).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.router import responses_output
from services.router.door_wire import StreamWriter, answer_headers, error_response, stream_headers
from services.router.openai_errors import error_body
from services.router.openai_request import ParsedChat
from services.router.responses_request import ParsedResponses, parse_responses_body, responses_param


class ResponsesWire:
    """One POST /v1/responses request."""

    def __init__(self) -> None:
        self._parsed: ParsedResponses | None = None

    def parse(self, payload: object, fallback_header: str | None) -> ParsedChat:
        self._parsed = parse_responses_body(payload, fallback_header=fallback_header)
        return self._parsed.chat

    def error(self, error: MeshError) -> Response:
        fields = self._parsed.fields if self._parsed is not None else None
        return error_response(error, fields, param_of=responses_param)

    def answer(self, answer: rpb.ChatResponse) -> Response:
        assert self._parsed is not None
        identifier = responses_output.response_id()
        body = responses_output.response_object(self._parsed, answer, identifier)
        return JSONResponse(body, headers=answer_headers(answer, body, identifier))

    def stream(self, model: str) -> tuple[StreamWriter, dict[str, str]]:
        assert self._parsed is not None
        identifier = responses_output.response_id()
        shell = responses_output.ResponseShell(self._parsed, identifier, model)
        return _EventWriter(responses_output.ResponseEvents(shell), self._parsed), stream_headers(identifier)


class _EventWriter:
    """Responses events; a failure after the start is `response.failed` carrying the OpenAI error."""

    def __init__(self, events: responses_output.ResponseEvents, parsed: ParsedResponses) -> None:
        self._events = events
        self._parsed = parsed

    def opening(self) -> list[bytes]:
        return [responses_output.sse(event) for event in self._events.opening()]

    def event(self, event: rpb.StreamChatResponse) -> list[bytes]:
        return [responses_output.sse(item) for item in self._events.event(event)]

    def failed(self, error: MeshError) -> list[bytes]:
        body = error_body(error, self._parsed.fields, param_of=responses_param)["error"]
        failure = responses_output.failure(error.code, body["message"])
        return [responses_output.sse(event) for event in self._events.failed(failure)]

    def done(self) -> list[bytes]:
        return []  # response.completed is the last event; Responses streams send no [DONE]
