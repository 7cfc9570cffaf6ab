"""Every span, attribute and metric name llmmesh records, in one place.

OpenTelemetry GenAI semantic conventions (`gen_ai.*`) where a name exists,
RPC/HTTP/server conventions for transport facts, ours under `llmmesh.*`.
"""

from __future__ import annotations

from typing import Final

# -- span names (formatted with the model, profile or tool name) ----------------------------
SPAN_CHAT: Final = "chat {model}"
SPAN_INVOKE_AGENT: Final = "invoke_agent {name}"
SPAN_EXECUTE_TOOL: Final = "execute_tool {name}"
SPAN_ATTEMPT: Final = "attempt {model}"
SPAN_EMBEDDINGS: Final = "embeddings {model}"

# -- GenAI attributes -----------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
# Opt-in content (LLMMESH_CAPTURE_CONTENT=true): JSON in the GenAI message schema.
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"

OPERATION_CHAT: Final = "chat"
OPERATION_INVOKE_AGENT: Final = "invoke_agent"
OPERATION_EXECUTE_TOOL: Final = "execute_tool"
OPERATION_EMBEDDINGS: Final = "embeddings"

# -- transport attributes ------------------------------------------------------------------
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_FULL: Final = "url.full"

# -- llmmesh attributes --------------------------------------------------------------------
ATTEMPT_INDEX: Final = "llmmesh.attempt.index"
ATTEMPT_MODEL: Final = "llmmesh.attempt.model"
ATTEMPT_PROVIDER: Final = "llmmesh.attempt.provider"
ATTEMPT_INSTANCE: Final = "llmmesh.attempt.instance"
ATTEMPT_OUTCOME: Final = "llmmesh.attempt.outcome"
ATTEMPT_CODE: Final = "llmmesh.attempt.code"
ATTEMPT_REASON: Final = "llmmesh.attempt.reason"
ATTEMPT_HEDGED: Final = "llmmesh.attempt.hedged"
ATTEMPT_RETRY: Final = "llmmesh.attempt.retry"
ATTEMPT_FALLBACK_REASON: Final = "llmmesh.attempt.fallback_reason"
ATTEMPT_MOVED_ON_BECAUSE: Final = "llmmesh.attempt.moved_on_because"
ATTEMPT_BREAKER_STATE: Final = "llmmesh.attempt.breaker_state"
ROUTER_STRATEGY: Final = "llmmesh.router.strategy"
ROUTER_MODEL: Final = "llmmesh.router.model"
ROUTER_ATTEMPTS: Final = "llmmesh.router.attempts"
ROUTER_ESTIMATED_COST: Final = "llmmesh.router.estimated_cost_usd"
AGENT_RUN_ID: Final = "llmmesh.agent.run_id"
AGENT_STEP: Final = "llmmesh.agent.step"
AGENT_END_REASON: Final = "llmmesh.agent.end_reason"
BREAKER: Final = "llmmesh.breaker"
HEDGE_RESULT: Final = "llmmesh.hedge.result"
FALLBACK_FROM: Final = "llmmesh.fallback.from_model"
FALLBACK_TO: Final = "llmmesh.fallback.to_model"

# -- metric attributes (labels) ----------------------------------------------------------------
# The caller's door (`grpc` or `http`), the call's shape, and the gRPC status name the caller got.
DOOR: Final = "llmmesh.door"
CALL: Final = "llmmesh.call"
CODE: Final = "llmmesh.code"
TENANT: Final = "llmmesh.tenant"
BREAKER_SCOPE: Final = "llmmesh.breaker.scope"
DISCOVERY_SERVICE: Final = "llmmesh.discovery.service"
TOOL_OUTCOME: Final = "llmmesh.tool.outcome"
# Model labels for requests whose model is not in the routing table (bounded cardinality).
MODEL_UNKNOWN: Final = "unknown"

# -- metrics ---------------------------------------------------------------------------------
# Each process registers only its own (docs/operations.md lists them with their Prometheus names).
# Adapters: the GenAI client metrics, in-flight calls and the in-flight limit.
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_ADAPTER_IN_FLIGHT: Final = "llmmesh.adapter.in_flight"
METRIC_ADAPTER_IN_FLIGHT_LIMIT: Final = "llmmesh.adapter.in_flight_limit"
METRIC_ADAPTER_TIME_TO_FIRST_TOKEN: Final = "llmmesh.adapter.time_to_first_token"
# Router: caller requests (both doors), attempts, resilience, discovery and the quota store.
METRIC_SERVER_REQUEST_DURATION: Final = "gen_ai.server.request.duration"
METRIC_SERVER_TIME_TO_FIRST_TOKEN: Final = "gen_ai.server.time_to_first_token"
METRIC_ROUTER_REQUESTS: Final = "llmmesh.router.requests"
METRIC_ROUTER_TOKENS: Final = "llmmesh.router.tokens"
METRIC_ROUTER_ATTEMPTS: Final = "llmmesh.router.attempts"
METRIC_ROUTER_FALLBACKS: Final = "llmmesh.router.fallbacks"
METRIC_ROUTER_HEDGES: Final = "llmmesh.router.hedges"
METRIC_ROUTER_BREAKER_STATE: Final = "llmmesh.router.breaker.state"
METRIC_ROUTER_IN_FLIGHT: Final = "llmmesh.router.in_flight"
METRIC_ROUTER_COST: Final = "llmmesh.router.estimated_cost.usd"
METRIC_ROUTER_DISCOVERY_FRESH: Final = "llmmesh.router.discovery.fresh"
METRIC_ROUTER_DISCOVERY_ENDPOINTS: Final = "llmmesh.router.discovery.endpoints"
METRIC_ROUTER_QUOTA_STORE_UP: Final = "llmmesh.router.quota_store.up"
# Agent: runs, steps and tool calls.
METRIC_AGENT_RUNS: Final = "llmmesh.agent.runs"
METRIC_AGENT_RUN_DURATION: Final = "llmmesh.agent.run.duration"
METRIC_AGENT_STEPS: Final = "llmmesh.agent.steps"
METRIC_AGENT_TOOL_CALLS: Final = "llmmesh.agent.tool_calls"
METRIC_AGENT_TOOL_DURATION: Final = "llmmesh.agent.tool.duration"
METRIC_AGENT_IN_FLIGHT: Final = "llmmesh.agent.in_flight"

# GenAI semantic-convention bucket boundaries.
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
