import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from llmmesh.v1 import chat_pb2 as _chat_pb2
from llmmesh.v1 import router_service_pb2 as _router_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_END_REASON_UNSPECIFIED: _ClassVar[RunEndReason]
    RUN_END_REASON_ANSWER: _ClassVar[RunEndReason]
    RUN_END_REASON_ITERATION_LIMIT: _ClassVar[RunEndReason]
    RUN_END_REASON_TOKEN_BUDGET: _ClassVar[RunEndReason]
    RUN_END_REASON_COST_BUDGET: _ClassVar[RunEndReason]
    RUN_END_REASON_DEADLINE: _ClassVar[RunEndReason]
    RUN_END_REASON_ERROR: _ClassVar[RunEndReason]

class ToolCallLimit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_CALL_LIMIT_UNSPECIFIED: _ClassVar[ToolCallLimit]
    TOOL_CALL_LIMIT_PER_TURN: _ClassVar[ToolCallLimit]
    TOOL_CALL_LIMIT_PER_RUN: _ClassVar[ToolCallLimit]
RUN_END_REASON_UNSPECIFIED: RunEndReason
RUN_END_REASON_ANSWER: RunEndReason
RUN_END_REASON_ITERATION_LIMIT: RunEndReason
RUN_END_REASON_TOKEN_BUDGET: RunEndReason
RUN_END_REASON_COST_BUDGET: RunEndReason
RUN_END_REASON_DEADLINE: RunEndReason
RUN_END_REASON_ERROR: RunEndReason
TOOL_CALL_LIMIT_UNSPECIFIED: ToolCallLimit
TOOL_CALL_LIMIT_PER_TURN: ToolCallLimit
TOOL_CALL_LIMIT_PER_RUN: ToolCallLimit

class AgentTask(_message.Message):
    __slots__ = ("input", "history", "profile", "model", "routing", "tools", "max_iterations", "max_total_tokens", "max_cost_usd", "system_prompt")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    input: str
    history: _containers.RepeatedCompositeFieldContainer[_chat_pb2.Message]
    profile: str
    model: str
    routing: _router_service_pb2.RoutingPolicy
    tools: _containers.RepeatedScalarFieldContainer[str]
    max_iterations: int
    max_total_tokens: int
    max_cost_usd: float
    system_prompt: str
    def __init__(self, input: _Optional[str] = ..., history: _Optional[_Iterable[_Union[_chat_pb2.Message, _Mapping]]] = ..., profile: _Optional[str] = ..., model: _Optional[str] = ..., routing: _Optional[_Union[_router_service_pb2.RoutingPolicy, _Mapping]] = ..., tools: _Optional[_Iterable[str]] = ..., max_iterations: _Optional[int] = ..., max_total_tokens: _Optional[int] = ..., max_cost_usd: _Optional[float] = ..., system_prompt: _Optional[str] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: AgentTask
    def __init__(self, task: _Optional[_Union[AgentTask, _Mapping]] = ...) -> None: ...

class RunTotals(_message.Message):
    __slots__ = ("usage", "estimated_cost_usd", "iterations", "duration", "tool_calls", "tool_calls_refused")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_REFUSED_FIELD_NUMBER: _ClassVar[int]
    usage: _chat_pb2.Usage
    estimated_cost_usd: float
    iterations: int
    duration: _duration_pb2.Duration
    tool_calls: int
    tool_calls_refused: int
    def __init__(self, usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., estimated_cost_usd: _Optional[float] = ..., iterations: _Optional[int] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., tool_calls: _Optional[int] = ..., tool_calls_refused: _Optional[int] = ...) -> None: ...

class RunEnd(_message.Message):
    __slots__ = ("reason", "answer", "detail", "totals")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    reason: RunEndReason
    answer: str
    detail: str
    totals: RunTotals
    def __init__(self, reason: _Optional[_Union[RunEndReason, str]] = ..., answer: _Optional[str] = ..., detail: _Optional[str] = ..., totals: _Optional[_Union[RunTotals, _Mapping]] = ...) -> None: ...

class StepStarted(_message.Message):
    __slots__ = ("step", "model")
    STEP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    step: int
    model: str
    def __init__(self, step: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class ModelOutput(_message.Message):
    __slots__ = ("step", "text", "model", "provider", "usage", "estimated_cost_usd", "attempts")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    step: int
    text: str
    model: str
    provider: str
    usage: _chat_pb2.Usage
    estimated_cost_usd: float
    attempts: _containers.RepeatedCompositeFieldContainer[_router_service_pb2.Attempt]
    def __init__(self, step: _Optional[int] = ..., text: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., estimated_cost_usd: _Optional[float] = ..., attempts: _Optional[_Iterable[_Union[_router_service_pb2.Attempt, _Mapping]]] = ...) -> None: ...

class ToolCallRequested(_message.Message):
    __slots__ = ("step", "call")
    STEP_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    step: int
    call: _chat_pb2.ToolCall
    def __init__(self, step: _Optional[int] = ..., call: _Optional[_Union[_chat_pb2.ToolCall, _Mapping]] = ...) -> None: ...

class ToolCallFinished(_message.Message):
    __slots__ = ("step", "result", "duration")
    STEP_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    step: int
    result: _chat_pb2.ToolResult
    duration: _duration_pb2.Duration
    def __init__(self, step: _Optional[int] = ..., result: _Optional[_Union[_chat_pb2.ToolResult, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ToolCallsLimited(_message.Message):
    __slots__ = ("step", "limit", "max", "requested", "refused_call_ids")
    STEP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_CALL_IDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    limit: ToolCallLimit
    max: int
    requested: int
    refused_call_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, step: _Optional[int] = ..., limit: _Optional[_Union[ToolCallLimit, str]] = ..., max: _Optional[int] = ..., requested: _Optional[int] = ..., refused_call_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("step_started", "model_output", "tool_call_requested", "tool_call_finished", "end", "tool_calls_limited")
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FINISHED_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_LIMITED_FIELD_NUMBER: _ClassVar[int]
    step_started: StepStarted
    model_output: ModelOutput
    tool_call_requested: ToolCallRequested
    tool_call_finished: ToolCallFinished
    end: RunEnd
    tool_calls_limited: ToolCallsLimited
    def __init__(self, step_started: _Optional[_Union[StepStarted, _Mapping]] = ..., model_output: _Optional[_Union[ModelOutput, _Mapping]] = ..., tool_call_requested: _Optional[_Union[ToolCallRequested, _Mapping]] = ..., tool_call_finished: _Optional[_Union[ToolCallFinished, _Mapping]] = ..., end: _Optional[_Union[RunEnd, _Mapping]] = ..., tool_calls_limited: _Optional[_Union[ToolCallsLimited, _Mapping]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("end", "events")
    END_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    end: RunEnd
    events: _containers.RepeatedCompositeFieldContainer[RunEvent]
    def __init__(self, end: _Optional[_Union[RunEnd, _Mapping]] = ..., events: _Optional[_Iterable[_Union[RunEvent, _Mapping]]] = ...) -> None: ...

class StreamRunRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: AgentTask
    def __init__(self, task: _Optional[_Union[AgentTask, _Mapping]] = ...) -> None: ...

class StreamRunResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RunEvent
    def __init__(self, event: _Optional[_Union[RunEvent, _Mapping]] = ...) -> None: ...

class ListProfilesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentProfile(_message.Message):
    __slots__ = ("name", "description", "model", "tools", "max_iterations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    model: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    max_iterations: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., model: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., max_iterations: _Optional[int] = ...) -> None: ...

class ListProfilesResponse(_message.Message):
    __slots__ = ("profiles",)
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[AgentProfile]
    def __init__(self, profiles: _Optional[_Iterable[_Union[AgentProfile, _Mapping]]] = ...) -> None: ...
