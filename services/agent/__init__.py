"""The agent service: a model-agnostic ReAct loop (think → act → observe) over the router.

`llmmesh.v1.AgentService` (service name `llmmesh-agent`) takes an AgentTask,
calls RouterService.Chat with the conversation and the tool definitions,
runs the tool calls the model asks for (several in one turn concurrently),
appends their results as ROLE_TOOL messages, and repeats until an answer or
a limit. Every run ends with one RunEnd saying how: ANSWER, ITERATION_LIMIT,
TOKEN_BUDGET, COST_BUDGET, DEADLINE or ERROR.

Metadata on every router call, so routing and telemetry know which loop step
they serve (all values are strings):

    llmmesh-agent-run-id              one id per run (hex)
    llmmesh-agent-profile             the profile the run uses
    llmmesh-agent-step                1-based step number of this call
    llmmesh-agent-max-steps           the run's iteration limit
    llmmesh-agent-remaining-tokens    tokens left in the run's budget before this call
                                      (absent when the run has no token budget)
    llmmesh-agent-remaining-cost-usd  dollars left in the run's budget, 6 decimals
                                      (absent when the run has no cost budget)
    traceparent, tracestate           the W3C context of this step's `chat` span (set by the channel)

The router call's gRPC deadline is the run's time left (the caller's deadline
less a margin for the RunEnd), so the router's attempts fit inside the run,
and it waits for a router that is not reachable yet (wait_for_ready).

Metadata on every remote tool call: llmmesh-agent-run-id, and llmmesh-tenant
(the caller's tenant, when caller auth is on).

Modules: plan (task + profile → RunPlan), loop (the loop), acting (one run's
tool calls), tool_limits (per-turn, per-run and concurrency limits), budget
(the next step's known spend), tools/ (registry, built-ins, remote
ToolServices), profiles (the profiles file), servicer, main (the process),
example_tools (a ToolService for tests and demos).
"""
