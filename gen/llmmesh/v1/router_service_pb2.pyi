import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from llmmesh.v1 import chat_pb2 as _chat_pb2
from llmmesh.v1 import embeddings_pb2 as _embeddings_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoutingStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_STRATEGY_UNSPECIFIED: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_FALLBACK: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_HEDGE: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_FANOUT_FIRST: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_FANOUT_ALL: _ClassVar[RoutingStrategy]

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SUCCEEDED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_FAILED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CANCELLED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SKIPPED: _ClassVar[AttemptOutcome]
ROUTING_STRATEGY_UNSPECIFIED: RoutingStrategy
ROUTING_STRATEGY_FALLBACK: RoutingStrategy
ROUTING_STRATEGY_HEDGE: RoutingStrategy
ROUTING_STRATEGY_FANOUT_FIRST: RoutingStrategy
ROUTING_STRATEGY_FANOUT_ALL: RoutingStrategy
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_SUCCEEDED: AttemptOutcome
ATTEMPT_OUTCOME_FAILED: AttemptOutcome
ATTEMPT_OUTCOME_CANCELLED: AttemptOutcome
ATTEMPT_OUTCOME_SKIPPED: AttemptOutcome

class RoutingPolicy(_message.Message):
    __slots__ = ("fallback_models", "strategy", "hedge_delay", "per_attempt_timeout", "max_retries", "allow_mid_stream_continuation", "fallback_on_content_filter", "first_token_timeout", "stream_idle_timeout")
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    HEDGE_DELAY_FIELD_NUMBER: _ClassVar[int]
    PER_ATTEMPT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MID_STREAM_CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ON_CONTENT_FILTER_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    STREAM_IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    strategy: RoutingStrategy
    hedge_delay: _duration_pb2.Duration
    per_attempt_timeout: _duration_pb2.Duration
    max_retries: int
    allow_mid_stream_continuation: bool
    fallback_on_content_filter: bool
    first_token_timeout: _duration_pb2.Duration
    stream_idle_timeout: _duration_pb2.Duration
    def __init__(self, fallback_models: _Optional[_Iterable[str]] = ..., strategy: _Optional[_Union[RoutingStrategy, str]] = ..., hedge_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., per_attempt_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_retries: _Optional[int] = ..., allow_mid_stream_continuation: _Optional[bool] = ..., fallback_on_content_filter: _Optional[bool] = ..., first_token_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stream_idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("model", "messages", "tools", "tool_choice", "settings", "extensions", "routing", "caller")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[_chat_pb2.Message]
    tools: _containers.RepeatedCompositeFieldContainer[_chat_pb2.ToolDefinition]
    tool_choice: _chat_pb2.ToolChoice
    settings: _chat_pb2.GenerationSettings
    extensions: _struct_pb2.Struct
    routing: RoutingPolicy
    caller: _chat_pb2.CallerContext
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_chat_pb2.Message, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[_chat_pb2.ToolDefinition, _Mapping]]] = ..., tool_choice: _Optional[_Union[_chat_pb2.ToolChoice, _Mapping]] = ..., settings: _Optional[_Union[_chat_pb2.GenerationSettings, _Mapping]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., routing: _Optional[_Union[RoutingPolicy, _Mapping]] = ..., caller: _Optional[_Union[_chat_pb2.CallerContext, _Mapping]] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("model", "provider", "instance", "outcome", "code", "reason", "message", "latency", "hedged", "moved_on_because")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    HEDGED_FIELD_NUMBER: _ClassVar[int]
    MOVED_ON_BECAUSE_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    instance: str
    outcome: AttemptOutcome
    code: int
    reason: str
    message: str
    latency: _duration_pb2.Duration
    hedged: bool
    moved_on_because: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., instance: _Optional[str] = ..., outcome: _Optional[_Union[AttemptOutcome, str]] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., hedged: _Optional[bool] = ..., moved_on_because: _Optional[str] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("message", "finish_reason", "usage", "model", "provider", "response_model", "attempts", "estimated_cost_usd", "alternatives", "extensions", "response_id")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    message: _chat_pb2.Message
    finish_reason: _chat_pb2.FinishReason
    usage: _chat_pb2.Usage
    model: str
    provider: str
    response_model: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    estimated_cost_usd: float
    alternatives: _containers.RepeatedCompositeFieldContainer[ChatResponse]
    extensions: _struct_pb2.Struct
    response_id: str
    def __init__(self, message: _Optional[_Union[_chat_pb2.Message, _Mapping]] = ..., finish_reason: _Optional[_Union[_chat_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., response_model: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., estimated_cost_usd: _Optional[float] = ..., alternatives: _Optional[_Iterable[_Union[ChatResponse, _Mapping]]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., response_id: _Optional[str] = ...) -> None: ...

class StreamChatRequest(_message.Message):
    __slots__ = ("model", "messages", "tools", "tool_choice", "settings", "extensions", "routing", "caller")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[_chat_pb2.Message]
    tools: _containers.RepeatedCompositeFieldContainer[_chat_pb2.ToolDefinition]
    tool_choice: _chat_pb2.ToolChoice
    settings: _chat_pb2.GenerationSettings
    extensions: _struct_pb2.Struct
    routing: RoutingPolicy
    caller: _chat_pb2.CallerContext
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_chat_pb2.Message, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[_chat_pb2.ToolDefinition, _Mapping]]] = ..., tool_choice: _Optional[_Union[_chat_pb2.ToolChoice, _Mapping]] = ..., settings: _Optional[_Union[_chat_pb2.GenerationSettings, _Mapping]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., routing: _Optional[_Union[RoutingPolicy, _Mapping]] = ..., caller: _Optional[_Union[_chat_pb2.CallerContext, _Mapping]] = ...) -> None: ...

class StreamContinuation(_message.Message):
    __slots__ = ("model", "provider", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StreamChatFinal(_message.Message):
    __slots__ = ("finish_reason", "usage", "model", "provider", "response_model", "attempts", "estimated_cost_usd", "continued", "extensions", "response_id")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    finish_reason: _chat_pb2.FinishReason
    usage: _chat_pb2.Usage
    model: str
    provider: str
    response_model: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    estimated_cost_usd: float
    continued: bool
    extensions: _struct_pb2.Struct
    response_id: str
    def __init__(self, finish_reason: _Optional[_Union[_chat_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., response_model: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., estimated_cost_usd: _Optional[float] = ..., continued: _Optional[bool] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., response_id: _Optional[str] = ...) -> None: ...

class StreamChatResponse(_message.Message):
    __slots__ = ("delta", "continuation", "final")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    delta: _chat_pb2.ChatDelta
    continuation: StreamContinuation
    final: StreamChatFinal
    def __init__(self, delta: _Optional[_Union[_chat_pb2.ChatDelta, _Mapping]] = ..., continuation: _Optional[_Union[StreamContinuation, _Mapping]] = ..., final: _Optional[_Union[StreamChatFinal, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_chat_pb2.ModelInfo]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[_chat_pb2.ModelInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "inputs", "dimensions", "extensions", "routing", "user")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    dimensions: int
    extensions: _struct_pb2.Struct
    routing: RoutingPolicy
    user: str
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., dimensions: _Optional[int] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., routing: _Optional[_Union[RoutingPolicy, _Mapping]] = ..., user: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "dimensions", "usage", "model", "provider", "response_model", "attempts", "estimated_cost_usd")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[_embeddings_pb2.Embedding]
    dimensions: int
    usage: _chat_pb2.Usage
    model: str
    provider: str
    response_model: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    estimated_cost_usd: float
    def __init__(self, embeddings: _Optional[_Iterable[_Union[_embeddings_pb2.Embedding, _Mapping]]] = ..., dimensions: _Optional[int] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., response_model: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., estimated_cost_usd: _Optional[float] = ...) -> None: ...
