"""The attempt state machine (services/router/attempts.py), event by event, and the blame table."""

from __future__ import annotations

import grpc
import pytest

from services.common.auth import REASON_NOT_ROUTER
from services.common.errors import MeshError
from services.router.attempts import AttemptMachine, Blame, Event, IllegalTransitionError, State, judge_error


class TestAttemptMachine:
    def test_stream_path_reaches_released(self) -> None:
        """START, FIRST_CHUNK, SUCCEED, RELEASE walk a streamed attempt to RELEASED and remember it streamed."""
        machine = AttemptMachine()
        for event, state in [
            (Event.START, State.RUNNING),
            (Event.FIRST_CHUNK, State.STREAMING),
            (Event.SUCCEED, State.SUCCEEDED),
            (Event.RELEASE, State.RELEASED),
        ]:
            assert machine.process(event) is state
        assert machine.streamed

    def test_admitted_attempt_may_be_cancelled(self) -> None:
        """An attempt cancelled before it started is still released."""
        machine = AttemptMachine()
        machine.process(Event.CANCEL)
        assert machine.process(Event.RELEASE) is State.RELEASED

    @pytest.mark.parametrize(
        ("events", "illegal"),
        [
            ([], Event.SUCCEED),  # no outcome before the call went out
            ([Event.START, Event.FAIL], Event.SUCCEED),  # one outcome only
            ([Event.START, Event.FAIL, Event.RELEASE], Event.RELEASE),  # released once
            ([Event.START], Event.RELEASE),  # no release without an outcome
        ],
    )
    def test_events_the_table_does_not_allow_raise(self, events, illegal) -> None:
        """An event not in the transition table raises at once instead of being ignored."""
        machine = AttemptMachine()
        for event in events:
            machine.process(event)
        with pytest.raises(IllegalTransitionError):
            machine.process(illegal)


class TestBlame:
    @pytest.mark.parametrize(
        ("error", "spent", "pool", "blame"),
        [
            (MeshError(grpc.StatusCode.UNAVAILABLE, "x", reason="UPSTREAM_UNAVAILABLE"), False, 1, Blame.PROVIDER),
            (MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x", reason="RATE_LIMITED"), False, 2, Blame.PROVIDER),
            (MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, "x"), False, 1, Blame.PROVIDER),  # its own budget
            (MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, "x"), True, 1, Blame.CALLER),  # the caller's deadline
            (MeshError(grpc.StatusCode.INVALID_ARGUMENT, "x", reason="INVALID_REQUEST"), False, 1, Blame.CALLER),
            (MeshError(grpc.StatusCode.FAILED_PRECONDITION, "x", reason=REASON_NOT_ROUTER), False, 1, Blame.MESH),
            (MeshError(grpc.StatusCode.UNAVAILABLE, "socket closed"), False, 2, Blame.INSTANCE),
        ],
    )
    def test_only_the_provider_s_faults_count(self, error, spent, pool, blame) -> None:
        """Blame by cause: provider faults, the caller's deadline and input, the mesh, one instance."""
        assert judge_error(error, caller_time_spent=spent, pool_size=pool).blame is blame
