"""A model-based test of the router engine: seeded random schedules against scripted adapters.

A real router process routes to two scripted ProviderService instances
(services/testing/scripted_provider.py) whose every upstream call does what
the schedule drew: answer after a delay, fail with a code and Retry-After,
stream N chunks then finish, cut, fail or end without a final, or hang.
Each schedule draws one to three concurrent requests: unary or streamed, a
strategy, a chain of models, retries, a caller deadline and sometimes a
cancel at a random point. After every request: it ended by its deadline
plus a small margin; an answer came from a model of the chain, whole; the
attempts list accounts for every upstream call the fakes saw; every
upstream call ended or was cancelled. Every few schedules, with the fakes
healthy: every breaker lets its probe through and closes, and no probe was
ever lost (a lost probe is a leaked attempt).

LLMMESH_ENGINE_SCHEDULES sets how many schedules run (`make test`: 80,
`make fuzz-engine`: 400), LLMMESH_ENGINE_SEED the first seed; a failure
names the seed that reproduces it.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, start_service
from services.testing.scripted_provider import Behaviour, ScriptedProviders, UpstreamCall

SCHEDULES = int(os.environ.get("LLMMESH_ENGINE_SCHEDULES", "80"))
FIRST_SEED = int(os.environ.get("LLMMESH_ENGINE_SEED", "1500"))
MODELS = ["m0", "m1", "m2", "m3"]
OPEN_SECONDS = 0.3
MAX_OPEN_SECONDS = 0.6
HEALTH_EVERY = 10
# How late a call may end after its deadline, and how late an upstream call may outlive it (a busy machine).
END_MARGIN_SECONDS = 0.5
UPSTREAM_MARGIN_SECONDS = 1.5
_STRATEGIES = [
    rpb.ROUTING_STRATEGY_FALLBACK,
    rpb.ROUTING_STRATEGY_HEDGE,
    rpb.ROUTING_STRATEGY_FANOUT_FIRST,
    rpb.ROUTING_STRATEGY_FANOUT_ALL,
]
_BREAKER = {"failure_rate": 1.0, "min_calls": 1000, "open_s": OPEN_SECONDS, "max_open_s": MAX_OPEN_SECONDS}
ROUTING = {
    "providers": {"scripted": {"kind": "mock", "service": "llmmesh-provider-scripted"}},
    "defaults": {
        "max_retries": 0,
        "min_attempt_budget_ms": 20,
        "base_backoff_ms": 1,
        "max_backoff_ms": 20,
        "retry_budget": {"ratio": 1.0, "window_s": 10, "min_per_second": 5},
        "hedge_budget": {"ratio": 1.0, "window_s": 10, "min_per_second": 5},
        "breaker": {"consecutive_failures": 3, **_BREAKER},
        "provider_breaker": {"consecutive_failures": 8, **_BREAKER},
        "first_token_timeout_s": 0.6,
        "stream_idle_timeout_s": 0.4,
    },
    "models": {name: {"provider": "scripted", "context_window": 100000} for name in MODELS},
}


@dataclass
class Planned:
    """One drawn request and what each of its models' upstream calls will do."""

    tag: str
    stream: bool
    strategy: int
    chain: list[str]
    deadline: float
    cancel_at: float | None
    retries: int
    hedge_delay: float
    behaviours: dict[str, list[Behaviour]]


@dataclass
class Outcome:
    """What the caller saw."""

    started: float
    ended: float = 0.0
    answer: rpb.ChatResponse | rpb.StreamChatFinal | None = None
    deltas: list[str] = field(default_factory=list)
    finals: int = 0
    error: MeshError | None = None
    cancelled: bool = False


def _behaviour(rng: random.Random, stream: bool) -> Behaviour:
    kind = rng.choices(["answer", "fail", "hang"], weights=[5, 3, 2])[0]
    delay = rng.choice([0.0, rng.uniform(0, 0.4)])
    if kind == "fail":
        code = rng.choice(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL", "INVALID_ARGUMENT"])
        retry_after = rng.choice([None, round(rng.uniform(0, 0.5), 3)])
        return Behaviour("fail", delay=delay, code=code, retry_after=retry_after)
    if kind == "hang":
        return Behaviour("hang")
    ending = rng.choices(["finish", "cut", "error", "eof"], weights=[6, 2, 1, 1])[0] if stream else "finish"
    return Behaviour("answer", delay=delay, chunks=rng.randint(0, 4), chunk_delay=rng.uniform(0, 0.15), ending=ending)


def draw(rng: random.Random, tag: str) -> Planned:
    stream = rng.random() < 0.5
    chain = rng.sample(MODELS, rng.randint(1, 3))
    deadline = rng.uniform(0.2, 1.5)
    return Planned(
        tag=tag,
        stream=stream,
        strategy=rpb.ROUTING_STRATEGY_FALLBACK if stream else rng.choice(_STRATEGIES),
        chain=chain,
        deadline=deadline,
        cancel_at=rng.uniform(0, deadline) if rng.random() < 0.3 else None,
        retries=rng.randint(0, 2),
        hedge_delay=rng.uniform(0.02, 0.3),
        behaviours={model: [_behaviour(rng, stream) for _ in range(rng.randint(1, 3))] for model in chain},
    )


def _request(planned: Planned) -> rpb.ChatRequest | rpb.StreamChatRequest:
    hedge_delay = rpb.RoutingPolicy().hedge_delay
    hedge_delay.FromNanoseconds(int(planned.hedge_delay * 1e9))
    policy = rpb.RoutingPolicy(
        fallback_models=planned.chain[1:] or planned.chain[:1],
        strategy=planned.strategy,  # type: ignore[arg-type]
        max_retries=planned.retries,
        hedge_delay=hedge_delay,
    )
    messages = [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=f"tag={planned.tag}")])]
    kind = rpb.StreamChatRequest if planned.stream else rpb.ChatRequest
    return kind(model=planned.chain[0], messages=messages, routing=policy)


async def _call(stub: router_service_pb2_grpc.RouterServiceStub, planned: Planned) -> Outcome:
    outcome = Outcome(started=time.monotonic())
    request = _request(planned)
    call = (stub.StreamChat if planned.stream else stub.Chat)(request, timeout=planned.deadline)
    cancel = None
    if planned.cancel_at is not None:
        cancel = asyncio.get_running_loop().call_later(planned.cancel_at, call.cancel)
    try:
        if planned.stream:
            async for event in call:
                if event.HasField("delta"):
                    outcome.deltas.append(event.delta.text)
                elif event.HasField("final"):
                    outcome.finals += 1
                    outcome.answer = event.final
        else:
            outcome.answer = await call
    except grpc.aio.AioRpcError as error:
        outcome.error = MeshError.from_rpc_error(error)
        outcome.cancelled = error.code() == grpc.StatusCode.CANCELLED
    except asyncio.CancelledError:
        outcome.cancelled = True
    finally:
        if cancel is not None:
            cancel.cancel()
    outcome.ended = time.monotonic()
    return outcome


class Model:
    """Runs schedules and checks what the caller saw against what the fakes saw."""

    def __init__(self, fleet: ScriptedProviders, stub: router_service_pb2_grpc.RouterServiceStub) -> None:
        self.fleet = fleet
        self.stub = stub
        self.findings: Counter[str] = Counter()
        self.breakers = BreakerOracle(fleet)

    async def schedule(self, seed: int) -> None:
        rng = random.Random(seed)
        plans = [draw(rng, f"s{seed}r{index}") for index in range(rng.randint(1, 3))]
        for planned in plans:
            for model, behaviours in planned.behaviours.items():
                self.fleet.script.queue(planned.tag, model, behaviours)
        outcomes = await asyncio.gather(*(_call(self.stub, planned) for planned in plans))
        for planned, outcome in zip(plans, outcomes, strict=True):
            await self._settled(planned)
            self.check(planned, outcome)

    async def _settled(self, planned: Planned) -> None:
        """Waits (boundedly) for the request's upstream calls to end, then says none still runs."""
        for _ in range(100):
            if not [c for c in self.fleet.calls_for(planned.tag) if c.ended is None]:
                break
            await asyncio.sleep(0.02)
        running = [c for c in self.fleet.calls_for(planned.tag) if c.ended is None]
        assert not running, f"upstream calls still running: {running}"

    def check(self, planned: Planned, outcome: Outcome) -> None:
        context = f"{planned} -> {outcome}"
        assert outcome.ended - outcome.started <= planned.deadline + END_MARGIN_SECONDS, context
        for call in self.fleet.calls_for(planned.tag):
            assert call.ended is not None
            assert call.ended - outcome.started <= planned.deadline + UPSTREAM_MARGIN_SECONDS, (call, context)
        if outcome.answer is not None:
            self._check_answer(planned, outcome, context)
            self.breakers.confirm(planned.tag, outcome.answer.attempts)
            skips = [a.message for a in outcome.answer.attempts if a.outcome == rpb.ATTEMPT_OUTCOME_SKIPPED]
            self.breakers.check_skips(skips, context)
        elif outcome.error is not None and not outcome.cancelled:
            self._check_error(planned, outcome.error, context)
            self.breakers.check_skips([outcome.error.message], context)
        self.findings["cancelled" if outcome.cancelled else "answered" if outcome.answer else "error"] += 1

    def _check_answer(self, planned: Planned, outcome: Outcome, context: str) -> None:
        answer = outcome.answer
        assert answer is not None
        assert answer.model in planned.chain, context
        answering = [c for c in self.fleet.calls_for(planned.tag) if c.model == answer.model and c.how == "answered"]
        assert answering, f"no scripted call of {answer.model} answered: {context}"
        if planned.stream:
            assert outcome.finals == 1, context
            assert "".join(outcome.deltas) in {call.text for call in answering}, f"a spliced or cut answer: {context}"
        self._check_accounting(planned, list(answer.attempts), context)

    def _check_accounting(self, planned: Planned, attempts: list[rpb.Attempt], context: str) -> None:
        ran = [a for a in attempts if a.outcome != rpb.ATTEMPT_OUTCOME_SKIPPED]
        seen = Counter((c.model, c.instance) for c in self.fleet.calls_for(planned.tag))
        listed = Counter((a.model, a.instance) for a in ran)
        assert not seen - listed, f"upstream calls missing from attempts {seen - listed}: {context}"
        # An attempt the fakes never saw must have been cut short before it was sent.
        unseen = listed - seen
        short = Counter((a.model, a.instance) for a in ran if _cut_short(a))
        assert not unseen - short, f"attempts that reached no fake {unseen - short}: {context}"

    def _check_error(self, planned: Planned, error: MeshError, context: str) -> None:
        if not error.reason:
            # The caller's own timer fired first: counted, since a busy machine can delay our answer.
            assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED, context
            self.findings["deadline errors without the router's details"] += 1
            return
        if "attempts" in error.metadata:
            assert len(self.fleet.calls_for(planned.tag)) <= int(error.metadata["attempts"]), context

    async def all_breakers_close(self, round_: int) -> None:
        """With healthy fakes, past the longest open time, each model answers at once (its probe closes it)."""
        await asyncio.sleep(MAX_OPEN_SECONDS + 0.1)
        for model in MODELS:
            request = rpb.ChatRequest(
                model=model,
                messages=[
                    chat_pb2.Message(
                        role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=f"tag=h{round_}{model}")]
                    )
                ],
                routing=rpb.RoutingPolicy(fallback_models=[model]),
            )
            try:
                response = await self.stub.Chat(request, timeout=5)
            except grpc.aio.AioRpcError as error:
                raise AssertionError(
                    f"healthy {model} still refused (a breaker stuck shut?): {error.details()}"
                ) from None
            assert [a.outcome for a in response.attempts] == [rpb.ATTEMPT_OUTCOME_SUCCEEDED], response
        self.findings["health rounds"] += 1


# What a provider may be blamed for, as the fakes see it: a failure of its own, a stream that ended
# without its final, or a stream the router gave up on (its first-token or idle timeout).
_FAULT_CODES = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL"}
_ORDER_SLACK_SECONDS = 0.2


class BreakerOracle:
    """Breakers by blame, from the outside: a candidate may be skipped as open only after enough
    failures the provider could be blamed for since its last confirmed success."""

    def __init__(self, fleet: ScriptedProviders) -> None:
        self.fleet = fleet
        self.successes: dict[str, float] = {}

    def confirm(self, tag: str, attempts: list[rpb.Attempt]) -> None:
        for attempt in attempts:
            if attempt.outcome != rpb.ATTEMPT_OUTCOME_SUCCEEDED:
                continue
            for call in self.fleet.calls_for(tag):
                if (call.model, call.instance, call.how) == (attempt.model, attempt.instance, "answered"):
                    assert call.ended is not None
                    self.successes[call.model] = max(self.successes.get(call.model, 0.0), call.ended)

    def check_skips(self, messages: list[str], context: str) -> None:
        for message in messages:
            for model in MODELS:
                if f"circuit open for scripted/{model}" in message:
                    bound = self.blamable([model])
                    assert bound >= 3, f"{model} skipped as open after only {bound} blamable failures: {context}"
            if "circuit open for provider scripted" in message:
                bound = self.blamable(MODELS)
                assert bound >= 8, f"provider skipped as open after only {bound} blamable failures: {context}"

    def blamable(self, models: list[str]) -> int:
        """At most this many failures in a row the breakers of `models` may have counted."""
        since = max((self.successes.get(model, 0.0) for model in models), default=0.0) - _ORDER_SLACK_SECONDS
        return sum(
            1
            for call in self.fleet.calls
            if call.model in models and call.ended is not None and call.ended >= since and _blamable(call)
        )


def _blamable(call: UpstreamCall) -> bool:
    if call.how == "failed":
        return call.behaviour.code in _FAULT_CODES
    return call.how == "eof" or (call.how == "cancelled" and call.stream)


def _cut_short(attempt: rpb.Attempt) -> bool:
    return attempt.outcome == rpb.ATTEMPT_OUTCOME_CANCELLED or attempt.code in (
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        grpc.StatusCode.CANCELLED.value[0],
    )


def _start_router(workdir: Path, addresses: list[str]) -> ServiceProcess:
    (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
    (workdir / "static.yaml").write_text(yaml.safe_dump({"services": {"llmmesh-provider-scripted": addresses}}))
    return start_service(
        ["-m", "services.router"],
        name="router",
        workdir=workdir,
        env={
            "LLMMESH_ROUTING_FILE": str(workdir / "routing.yaml"),
            "LLMMESH_STATIC_DISCOVERY_FILE": str(workdir / "static.yaml"),
            "LLMMESH_LOG_FORMAT": "json",
        },
    )


@pytest.mark.timeout(SCHEDULES * 6 + 120)
async def test_random_schedules_keep_the_invariants(tmp_path: Path) -> None:
    """Random faults, strategies, deadlines and cancels: every invariant holds after every request."""
    fleet = await ScriptedProviders(count=2).start()
    router = _start_router(tmp_path, fleet.addresses)
    try:
        async with grpc.aio.insecure_channel(router.address) as channel:
            model = Model(fleet, router_service_pb2_grpc.RouterServiceStub(channel))
            for index in range(SCHEDULES):
                seed = FIRST_SEED + index
                try:
                    await model.schedule(seed)
                    if (index + 1) % HEALTH_EVERY == 0 or index + 1 == SCHEDULES:
                        await model.all_breakers_close(index)
                except AssertionError as failure:
                    raise AssertionError(f"schedule seed {seed} (LLMMESH_ENGINE_SEED={seed}): {failure}") from None
        assert "probe lost" not in router.log(), "a breaker probe was leaked by some attempt"
        print(f"engine model: {SCHEDULES} schedules, {len(fleet.calls)} upstream calls, {dict(model.findings)}")
    finally:
        router.terminate()
        await fleet.stop()
