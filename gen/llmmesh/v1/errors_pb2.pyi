from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    CONTEXT_WINDOW_EXCEEDED: _ClassVar[ErrorReason]
    CONTENT_FILTERED: _ClassVar[ErrorReason]
    RATE_LIMITED: _ClassVar[ErrorReason]
    PROVIDER_AUTH_FAILED: _ClassVar[ErrorReason]
    MODEL_NOT_FOUND: _ClassVar[ErrorReason]
    INVALID_REQUEST: _ClassVar[ErrorReason]
    UNSUPPORTED_FEATURE: _ClassVar[ErrorReason]
    UPSTREAM_UNAVAILABLE: _ClassVar[ErrorReason]
    UPSTREAM_MALFORMED_RESPONSE: _ClassVar[ErrorReason]
    UPSTREAM_TIMEOUT: _ClassVar[ErrorReason]
    STREAM_TRUNCATED: _ClassVar[ErrorReason]
    ADAPTER_OVERLOADED: _ClassVar[ErrorReason]
    NO_HEALTHY_INSTANCE: _ClassVar[ErrorReason]
    INTERNAL: _ClassVar[ErrorReason]
    EMBEDDINGS_UNSUPPORTED: _ClassVar[ErrorReason]
    CALLER_NOT_ROUTER: _ClassVar[ErrorReason]
    MISSING_CREDENTIALS: _ClassVar[ErrorReason]
    MALFORMED_CREDENTIALS: _ClassVar[ErrorReason]
    INVALID_API_KEY: _ClassVar[ErrorReason]
    API_KEY_REVOKED: _ClassVar[ErrorReason]
    CIRCUIT_OPEN: _ClassVar[ErrorReason]
    MODEL_NOT_ALLOWED: _ClassVar[ErrorReason]
    TENANT_RATE_LIMITED: _ClassVar[ErrorReason]
    TENANT_BUDGET_EXHAUSTED: _ClassVar[ErrorReason]
    MESH_MISCONFIGURED: _ClassVar[ErrorReason]
    MISSING_CALLER_IDENTITY: _ClassVar[ErrorReason]
    TENANT_NOT_ALLOWED: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
CONTEXT_WINDOW_EXCEEDED: ErrorReason
CONTENT_FILTERED: ErrorReason
RATE_LIMITED: ErrorReason
PROVIDER_AUTH_FAILED: ErrorReason
MODEL_NOT_FOUND: ErrorReason
INVALID_REQUEST: ErrorReason
UNSUPPORTED_FEATURE: ErrorReason
UPSTREAM_UNAVAILABLE: ErrorReason
UPSTREAM_MALFORMED_RESPONSE: ErrorReason
UPSTREAM_TIMEOUT: ErrorReason
STREAM_TRUNCATED: ErrorReason
ADAPTER_OVERLOADED: ErrorReason
NO_HEALTHY_INSTANCE: ErrorReason
INTERNAL: ErrorReason
EMBEDDINGS_UNSUPPORTED: ErrorReason
CALLER_NOT_ROUTER: ErrorReason
MISSING_CREDENTIALS: ErrorReason
MALFORMED_CREDENTIALS: ErrorReason
INVALID_API_KEY: ErrorReason
API_KEY_REVOKED: ErrorReason
CIRCUIT_OPEN: ErrorReason
MODEL_NOT_ALLOWED: ErrorReason
TENANT_RATE_LIMITED: ErrorReason
TENANT_BUDGET_EXHAUSTED: ErrorReason
MESH_MISCONFIGURED: ErrorReason
MISSING_CALLER_IDENTITY: ErrorReason
TENANT_NOT_ALLOWED: ErrorReason
