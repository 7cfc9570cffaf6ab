"""Router answers → OpenAI Responses objects and stream events.

A unary answer becomes one `response` object: a `reasoning` item per
reasoning part (its text as `summary`; with `include:
["reasoning.encrypted_content"]`, what the provider needs back packed into
`encrypted_content`), a `message` output item with one `output_text` part
(when there is text) and one `function_call` item per tool call. A length or content-filter stop is `status: "incomplete"`
with `incomplete_details.reason`. Streams follow the order OpenAI sends and
clients (the SDK's stream helper, the Agents SDK, LangChain) rely on:

    response.created, response.in_progress,
    response.output_item.added (reasoning), response.reasoning_summary_part.added,
    response.reasoning_summary_text.delta ..., response.reasoning_summary_text.done,
    response.reasoning_summary_part.done, response.output_item.done,
    response.output_item.added (message), response.content_part.added,
    response.output_text.delta ..., response.output_text.done,
    response.content_part.done, response.output_item.done,
    response.output_item.added (function_call),
    response.function_call_arguments.delta ..., .done, response.output_item.done,
    response.completed | response.incomplete | response.failed

every event numbered by `sequence_number`. A failure after the stream has
started ends it with `response.failed` (the error in `response.error`).
What the mesh adds (provider, attempts, cost) rides in an extra `llmmesh`
field, as on chat completions.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import logprobs as logprobs_module
from services.router import door_citations, door_reasoning, openai_response
from services.router.responses_request import ParsedResponses, echoed_tools

_INCOMPLETE = {
    chat_pb2.FINISH_REASON_LENGTH: "max_output_tokens",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


_TEXT = "output_text"
_REFUSAL = "refusal"


def response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(value: chat_pb2.Usage) -> dict[str, Any]:
    return {
        "input_tokens": value.input_tokens,
        "input_tokens_details": {
            "cached_tokens": value.cached_input_tokens,
            "cache_write_tokens": value.cache_write_input_tokens,
        },
        "output_tokens": value.output_tokens,
        "output_tokens_details": {"reasoning_tokens": value.reasoning_tokens},
        "total_tokens": value.input_tokens + value.output_tokens,
    }


def _text_part(
    text: str, logprobs: Sequence[chat_pb2.TokenLogprob] = (), citations: Sequence[chat_pb2.Citation] = ()
) -> dict[str, Any]:
    # LogProb wants `bytes` as a list, never null: empty where the provider gave none.
    values = [{**entry, "bytes": entry["bytes"] or []} for entry in logprobs_module.to_openai(logprobs)]
    for entry in values:
        entry["top_logprobs"] = [{**top, "bytes": top["bytes"] or []} for top in entry["top_logprobs"]]
    annotations = [door_citations.responses_annotation(citation) for citation in citations]
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": values}


def _event_logprobs(values: Sequence[chat_pb2.TokenLogprob]) -> list[dict[str, Any]]:
    """ResponseLogProb: token, logprob and top_logprobs without bytes (delta and done events)."""
    return [
        {
            "token": item.token,
            "logprob": item.logprob,
            "top_logprobs": [{"token": top.token, "logprob": top.logprob} for top in item.top_logprobs],
        }
        for item in values
    ]


def _content_part(
    kind: str,
    text: str,
    logprobs: Sequence[chat_pb2.TokenLogprob] = (),
    citations: Sequence[chat_pb2.Citation] = (),
) -> dict[str, Any]:
    """An output message's content part: `output_text`, or `refusal` (the model declined)."""
    return {"type": "refusal", "refusal": text} if kind == _REFUSAL else _text_part(text, logprobs, citations)


def _message_item(identifier: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": identifier, "status": status, "role": "assistant", "content": content}


def _call_item(identifier: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": identifier,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _reasoning_item(identifier: str, part: chat_pb2.ReasoningPart, status: str, *, encrypted: bool) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": part.text}] if part.text else []
    packed = door_reasoning.pack(part) if encrypted else None
    return {"type": "reasoning", "id": identifier, "summary": summary, "encrypted_content": packed, "status": status}


def wants_encrypted(parsed: ParsedResponses) -> bool:
    return door_reasoning.ENCRYPTED_INCLUDE in (parsed.body.include or ())


class ResponseShell:
    """The `response` object's fields that echo the request; status and output are filled per event."""

    def __init__(self, parsed: ParsedResponses, identifier: str, model: str) -> None:
        self.id = identifier
        self.model = model
        self._parsed = parsed
        self._created = int(time.time())

    @property
    def parsed(self) -> ParsedResponses:
        return self._parsed

    def render(
        self,
        status: str,
        output: list[dict[str, Any]],
        *,
        finish: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_UNSPECIFIED,
        usage_value: chat_pb2.Usage | None = None,
        error: dict[str, Any] | None = None,
        mesh: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = self._parsed.body
        reason = _INCOMPLETE.get(finish)
        if status == "completed" and reason is not None:
            status = "incomplete"
        result: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "model": self.model,
            "output": output,
            "error": error,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "instructions": body.instructions,
            "metadata": body.metadata or {},
            "parallel_tool_calls": body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "max_output_tokens": body.max_output_tokens,
            "previous_response_id": None,
            "reasoning": {"effort": body.reasoning.effort, "summary": body.reasoning.summary}
            if body.reasoning is not None
            else None,
            "store": False,
            "text": {"format": _format_echo(parsed=self._parsed)},
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "tools": echoed_tools(self._parsed),
            "truncation": "disabled",
        }
        # The schema types usage as an object, never null: until the answer is in, no field.
        if usage_value is not None:
            result["usage"] = usage(usage_value)
        if status in ("completed", "incomplete"):
            result["completed_at"] = int(time.time())
        if mesh is not None:
            result["llmmesh"] = mesh
        return result


def _format_echo(*, parsed: ParsedResponses) -> dict[str, Any]:
    text = parsed.body.text
    if text is None or text.format is None:
        return {"type": "text"}
    echo: dict[str, Any] = {"type": text.format.type}
    if text.format.type == "json_schema":
        echo.update(name=text.format.name, schema=text.format.schema_ or {}, strict=bool(text.format.strict))
    return echo


def _mesh(answer: rpb.ChatResponse | rpb.StreamChatFinal) -> dict[str, Any]:
    return {
        "provider": answer.provider,
        "response_model": answer.response_model,
        # The upstream's id; the Responses `id` is the door's own.
        "response_id": answer.response_id,
        "estimated_cost_usd": answer.estimated_cost_usd,
        "attempts": openai_response.attempts(answer.attempts),
    }


def response_object(parsed: ParsedResponses, answer: rpb.ChatResponse, identifier: str) -> dict[str, Any]:
    """The `response` object for a unary answer."""
    message = answer.message
    text = "".join(part.text for part in message.content if part.WhichOneof("kind") == "text")
    encrypted = wants_encrypted(parsed)
    output: list[dict[str, Any]] = [
        _reasoning_item(_item_id("rs"), part, "completed", encrypted=encrypted)
        for part in door_reasoning.reasoning_parts(message)
    ]
    content = [_text_part(text, message.logprobs, message.citations)] if text or not message.refusal else []
    if message.refusal:
        content.append(_content_part(_REFUSAL, message.refusal))
    if text or message.refusal or not message.tool_calls:
        output.append(_message_item(_item_id("msg"), content, "completed"))
    for call in message.tool_calls:
        output.append(_call_item(_item_id("fc"), call.id, call.name, call.arguments_json, "completed"))
    shell = ResponseShell(parsed, identifier, answer.model)
    return shell.render("completed", output, finish=answer.finish_reason, usage_value=answer.usage, mesh=_mesh(answer))


def failure(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """`response.error` for a stream that fails after it started (ResponseError's codes)."""
    kind = "rate_limit_exceeded" if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "server_error"
    return {"code": kind, "message": message}


@dataclass(slots=True)
class _OpenItem:
    index: int
    item: dict[str, Any]
    #: A call's argument fragments.
    text: list[str] = field(default_factory=list)
    #: A message's content parts so far: (kind, fragments, token log probabilities, citations), the last one open.
    parts: list[tuple[str, list[str], list[chat_pb2.TokenLogprob], list[chat_pb2.Citation]]] = field(
        default_factory=list
    )


@dataclass(slots=True)
class _OpenReasoning:
    index: int
    item_id: str
    part: chat_pb2.ReasoningPart
    summary_open: bool = False


class ResponseEvents:
    """Turns router stream events into Responses stream events (dicts with `type`), in OpenAI's order.

    Sans-IO: the gateway feeds it router events and writes what it returns.
    """

    def __init__(self, shell: ResponseShell) -> None:
        self._shell = shell
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._message: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}
        self._reasoning: dict[int, _OpenReasoning] = {}
        self._encrypted = wants_encrypted(shell.parsed)

    def _event(self, kind: str, **payload: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **payload}
        self._sequence += 1
        return event

    def opening(self) -> list[dict[str, Any]]:
        response = self._shell.render("in_progress", [])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def event(self, event: rpb.StreamChatResponse) -> list[dict[str, Any]]:
        kind = event.WhichOneof("event")
        if kind == "delta":
            return self._delta(event.delta)
        if kind == "continuation":
            self._shell.model = event.continuation.model
            return []
        if kind == "final":
            return self._final(event.final)
        return []

    def failed(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        """The closing event of a stream that failed after it started."""
        # Failed while still waiting for the first event (after keepalives): open it first, as clients expect.
        opening = self.opening() if self._sequence == 0 else []
        response = self._shell.render("failed", self._output, error=error)
        return [*opening, self._event("response.failed", response=response)]

    def _delta(self, delta: chat_pb2.ChatDelta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if delta.HasField("reasoning"):
            events += self._reasoning_delta(delta.reasoning)
        if delta.text or delta.tool_calls:
            events += self._close_reasoning()
        if delta.text:
            events += self._content(_TEXT, delta.text, delta.logprobs)
        if delta.refusal:
            events += self._content(_REFUSAL, delta.refusal)
        if delta.citations:
            events += self._citations(delta.citations)
        for call in delta.tool_calls:
            events += self._call_delta(call)
        return events

    def _citations(self, citations: Sequence[chat_pb2.Citation]) -> list[dict[str, Any]]:
        """Annotations of the open output_text part (opened for them if need be), one event each."""
        events, message = self._open_part(_TEXT)
        found = message.parts[-1][3]
        for citation in citations:
            events.append(
                self._event(
                    "response.output_text.annotation.added",
                    annotation=door_citations.responses_annotation(citation),
                    annotation_index=len(found),
                    **self._where(message),
                )
            )
            found.append(citation)
        return events

    def _text(self, text: str) -> list[dict[str, Any]]:
        return self._content(_TEXT, text)

    def _content(
        self, kind: str, fragment: str, logprobs: Sequence[chat_pb2.TokenLogprob] = ()
    ) -> list[dict[str, Any]]:
        """A fragment of the message's text or refusal; a change of kind starts the next content part."""
        events, message = self._open_part(kind)
        message.parts[-1][1].append(fragment)
        message.parts[-1][2].extend(logprobs)
        where = self._where(message)
        if kind == _REFUSAL:
            events.append(self._event("response.refusal.delta", delta=fragment, **where))
        else:
            events.append(
                self._event("response.output_text.delta", delta=fragment, logprobs=_event_logprobs(logprobs), **where)
            )
        return events

    def _open_part(self, kind: str) -> tuple[list[dict[str, Any]], _OpenItem]:
        """Opens the message item, and a content part of `kind` unless the last one is of that kind."""
        events: list[dict[str, Any]] = []
        if self._message is None:
            item = _message_item(_item_id("msg"), [], "in_progress")
            self._message = _OpenItem(self._reserve(item), item)
            events.append(self._event("response.output_item.added", output_index=self._message.index, item=item))
        message = self._message
        if not message.parts or message.parts[-1][0] != kind:
            if message.parts:
                events += self._close_part(message)
            message.parts.append((kind, [], [], []))
            events.append(
                self._event("response.content_part.added", part=_content_part(kind, ""), **self._where(message))
            )
        return events, message

    def _close_part(self, message: _OpenItem) -> list[dict[str, Any]]:
        kind, fragments, values, citations = message.parts[-1]
        text = "".join(fragments)
        where = self._where(message)
        if kind == _REFUSAL:
            done = self._event("response.refusal.done", refusal=text, **where)
        else:
            done = self._event("response.output_text.done", text=text, logprobs=_event_logprobs(values), **where)
        part = _content_part(kind, text, values, citations)
        return [done, self._event("response.content_part.done", part=part, **where)]

    def _reasoning_delta(self, delta: chat_pb2.ReasoningDelta) -> list[dict[str, Any]]:
        """Each reasoning part is its own output item; its text one summary part, streamed."""
        events: list[dict[str, Any]] = []
        open_item = self._reasoning.get(delta.index)
        if open_item is None:
            events += self._close_reasoning()
            events += self._close_message()
            part = chat_pb2.ReasoningPart(provider=delta.provider)
            item = _reasoning_item(_item_id("rs"), part, "in_progress", encrypted=False)
            open_item = _OpenReasoning(self._reserve(item), item["id"], part)
            self._reasoning[delta.index] = open_item
            events.append(self._event("response.output_item.added", output_index=open_item.index, item=item))
        part = open_item.part
        part.signature = delta.signature or part.signature
        part.redacted_data = delta.redacted_data or part.redacted_data
        if delta.text:
            where = {"item_id": open_item.item_id, "output_index": open_item.index, "summary_index": 0}
            if not open_item.summary_open:
                open_item.summary_open = True
                summary = {"type": "summary_text", "text": ""}
                events.append(self._event("response.reasoning_summary_part.added", part=summary, **where))
            part.text += delta.text
            events.append(self._event("response.reasoning_summary_text.delta", delta=delta.text, **where))
        return events

    def _close_reasoning(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for open_item in sorted(self._reasoning.values(), key=lambda item: item.index):
            where = {"item_id": open_item.item_id, "output_index": open_item.index, "summary_index": 0}
            text = open_item.part.text
            if open_item.summary_open:
                summary = {"type": "summary_text", "text": text}
                events.append(self._event("response.reasoning_summary_text.done", text=text, **where))
                events.append(self._event("response.reasoning_summary_part.done", part=summary, **where))
            done = _reasoning_item(open_item.item_id, open_item.part, "completed", encrypted=self._encrypted)
            self._output[open_item.index] = done
            events.append(self._event("response.output_item.done", output_index=open_item.index, item=done))
        self._reasoning.clear()
        return events

    def _call_delta(self, call: chat_pb2.ToolCallDelta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if call.index not in self._calls:
            events += self._close_message()  # text before a call is its own item, finished first
            item = _call_item(_item_id("fc"), call.id, call.name, "", "in_progress")
            self._calls[call.index] = _OpenItem(self._reserve(item), item)
            events.append(
                self._event("response.output_item.added", output_index=self._calls[call.index].index, item=item)
            )
        open_call = self._calls[call.index]
        if call.arguments_json_delta:
            open_call.text.append(call.arguments_json_delta)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=open_call.item["id"],
                    output_index=open_call.index,
                    delta=call.arguments_json_delta,
                )
            )
        return events

    def _final(self, final: rpb.StreamChatFinal) -> list[dict[str, Any]]:
        self._shell.model = final.model
        events = self._close_reasoning()
        events += self._close_message()
        for open_call in sorted(self._calls.values(), key=lambda item: item.index):
            events += self._close_call(open_call)
        self._calls.clear()
        if all(item["type"] == "reasoning" for item in self._output):
            # A stream with no output still answers with an (empty) message, as unary does.
            events += self._text("")
            events += self._close_message()
        response = self._shell.render(
            "completed", self._output, finish=final.finish_reason, usage_value=final.usage, mesh=_mesh(final)
        )
        closing = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return [*events, self._event(closing, response=response)]

    def _close_message(self) -> list[dict[str, Any]]:
        if self._message is None:
            return []
        message, self._message = self._message, None
        events = self._close_part(message)
        content = [
            _content_part(kind, "".join(fragments), values, citations)
            for kind, fragments, values, citations in message.parts
        ]
        done = _message_item(message.item["id"], content, "completed")
        self._output[message.index] = done
        return [*events, self._event("response.output_item.done", output_index=message.index, item=done)]

    def _close_call(self, open_call: _OpenItem) -> list[dict[str, Any]]:
        arguments = "".join(open_call.text)
        item = open_call.item
        done = _call_item(item["id"], item["call_id"], item["name"], arguments, "completed")
        self._output[open_call.index] = done
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=open_call.index,
                name=item["name"],
                arguments=arguments,
            ),
            self._event("response.output_item.done", output_index=open_call.index, item=done),
        ]

    def _reserve(self, item: dict[str, Any]) -> int:
        self._output.append(item)
        return len(self._output) - 1

    @staticmethod
    def _where(item: _OpenItem) -> dict[str, Any]:
        return {"item_id": item.item["id"], "output_index": item.index, "content_index": max(len(item.parts) - 1, 0)}


def sse(event: dict[str, Any]) -> bytes:
    """One Responses server-sent event: `event: <type>` and its JSON data."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()
