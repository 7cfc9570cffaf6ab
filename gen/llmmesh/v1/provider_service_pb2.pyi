from google.protobuf import struct_pb2 as _struct_pb2
from llmmesh.v1 import chat_pb2 as _chat_pb2
from llmmesh.v1 import embeddings_pb2 as _embeddings_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderServiceChatRequest(_message.Message):
    __slots__ = ("model", "messages", "tools", "tool_choice", "settings", "extensions", "assistant_prefix", "caller")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[_chat_pb2.Message]
    tools: _containers.RepeatedCompositeFieldContainer[_chat_pb2.ToolDefinition]
    tool_choice: _chat_pb2.ToolChoice
    settings: _chat_pb2.GenerationSettings
    extensions: _struct_pb2.Struct
    assistant_prefix: str
    caller: _chat_pb2.CallerContext
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_chat_pb2.Message, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[_chat_pb2.ToolDefinition, _Mapping]]] = ..., tool_choice: _Optional[_Union[_chat_pb2.ToolChoice, _Mapping]] = ..., settings: _Optional[_Union[_chat_pb2.GenerationSettings, _Mapping]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., assistant_prefix: _Optional[str] = ..., caller: _Optional[_Union[_chat_pb2.CallerContext, _Mapping]] = ...) -> None: ...

class ProviderServiceChatResponse(_message.Message):
    __slots__ = ("message", "finish_reason", "usage", "response_model", "response_id", "headroom", "extensions")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    message: _chat_pb2.Message
    finish_reason: _chat_pb2.FinishReason
    usage: _chat_pb2.Usage
    response_model: str
    response_id: str
    headroom: _chat_pb2.RateLimitHeadroom
    extensions: _struct_pb2.Struct
    def __init__(self, message: _Optional[_Union[_chat_pb2.Message, _Mapping]] = ..., finish_reason: _Optional[_Union[_chat_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., response_model: _Optional[str] = ..., response_id: _Optional[str] = ..., headroom: _Optional[_Union[_chat_pb2.RateLimitHeadroom, _Mapping]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ProviderServiceStreamChatRequest(_message.Message):
    __slots__ = ("model", "messages", "tools", "tool_choice", "settings", "extensions", "assistant_prefix", "caller")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[_chat_pb2.Message]
    tools: _containers.RepeatedCompositeFieldContainer[_chat_pb2.ToolDefinition]
    tool_choice: _chat_pb2.ToolChoice
    settings: _chat_pb2.GenerationSettings
    extensions: _struct_pb2.Struct
    assistant_prefix: str
    caller: _chat_pb2.CallerContext
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_chat_pb2.Message, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[_chat_pb2.ToolDefinition, _Mapping]]] = ..., tool_choice: _Optional[_Union[_chat_pb2.ToolChoice, _Mapping]] = ..., settings: _Optional[_Union[_chat_pb2.GenerationSettings, _Mapping]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., assistant_prefix: _Optional[str] = ..., caller: _Optional[_Union[_chat_pb2.CallerContext, _Mapping]] = ...) -> None: ...

class ProviderStreamFinal(_message.Message):
    __slots__ = ("finish_reason", "usage", "response_model", "response_id", "headroom", "extensions")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    finish_reason: _chat_pb2.FinishReason
    usage: _chat_pb2.Usage
    response_model: str
    response_id: str
    headroom: _chat_pb2.RateLimitHeadroom
    extensions: _struct_pb2.Struct
    def __init__(self, finish_reason: _Optional[_Union[_chat_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., response_model: _Optional[str] = ..., response_id: _Optional[str] = ..., headroom: _Optional[_Union[_chat_pb2.RateLimitHeadroom, _Mapping]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ProviderServiceStreamChatResponse(_message.Message):
    __slots__ = ("delta", "final")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    delta: _chat_pb2.ChatDelta
    final: ProviderStreamFinal
    def __init__(self, delta: _Optional[_Union[_chat_pb2.ChatDelta, _Mapping]] = ..., final: _Optional[_Union[ProviderStreamFinal, _Mapping]] = ...) -> None: ...

class ProviderServiceListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProviderServiceListModelsResponse(_message.Message):
    __slots__ = ("models", "provider")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_chat_pb2.ModelInfo]
    provider: str
    def __init__(self, models: _Optional[_Iterable[_Union[_chat_pb2.ModelInfo, _Mapping]]] = ..., provider: _Optional[str] = ...) -> None: ...

class ProviderServiceEmbedRequest(_message.Message):
    __slots__ = ("model", "inputs", "dimensions", "extensions", "user")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    dimensions: int
    extensions: _struct_pb2.Struct
    user: str
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., dimensions: _Optional[int] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., user: _Optional[str] = ...) -> None: ...

class ProviderServiceEmbedResponse(_message.Message):
    __slots__ = ("embeddings", "usage", "response_model", "headroom")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[_embeddings_pb2.Embedding]
    usage: _chat_pb2.Usage
    response_model: str
    headroom: _chat_pb2.RateLimitHeadroom
    def __init__(self, embeddings: _Optional[_Iterable[_Union[_embeddings_pb2.Embedding, _Mapping]]] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., response_model: _Optional[str] = ..., headroom: _Optional[_Union[_chat_pb2.RateLimitHeadroom, _Mapping]] = ...) -> None: ...
