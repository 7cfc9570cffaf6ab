"""The decoded-JSON reading of Messages answers reads like the SDK's non-validating models it replaces."""

from __future__ import annotations

import json

import pytest
from anthropic._models import construct_type
from anthropic.types import Message, RawMessageStreamEvent

from services.providers.anthropic import wire
from services.testing.fake_anthropic import message, stream_events

BODY = message(
    text="Hi there",
    tool_calls=[("toolu_1", "get_weather", {"city": "Paris", "days": [1, 2], "nested": {"a": None}})],
    thinking=[("hmm", "sig")],
    stop_reason="refusal",
    stop_details={"type": "refusal", "category": "cyber", "explanation": None},
)


class TestFields:
    def test_the_fields_the_mapping_reads_match_the_sdk_model(self):
        """Every block's type, text, tool input and the usage read the same from JSON as from the SDK's model."""
        ours = wire.wrap(json.loads(json.dumps(BODY)))
        sdk = construct_type(type_=Message, value=json.loads(json.dumps(BODY)))
        assert [block.type for block in ours.content] == [block.type for block in sdk.content]
        assert ours.content[2].input == sdk.content[2].input
        assert json.dumps(ours.content[2].input) == json.dumps(sdk.content[2].input)
        assert ours.usage.output_tokens == sdk.usage.output_tokens
        assert ours.stop_details.model_dump(exclude_none=True) == sdk.stop_details.model_dump(exclude_none=True)

    def test_stream_events_read_like_the_sdk_events(self):
        """Each streamed event's type, index and delta fields match the SDK's constructed event."""
        for _, data in stream_events(BODY, pieces=3):
            ours = wire.wrap(data)
            sdk = construct_type(type_=RawMessageStreamEvent, value=data)
            assert ours.type == sdk.type
            assert ours.index == getattr(sdk, "index", None)
            if ours.type == "content_block_delta":
                assert ours.delta.type == sdk.delta.type
                assert ours.delta.text == getattr(sdk.delta, "text", None)

    def test_an_absent_optional_field_reads_none(self):
        """A key the answer lacks reads as None, as the SDK's optional fields do."""
        assert wire.wrap({"type": "message_delta", "delta": {}}).delta.stop_sequence is None


class TestLoads:
    @pytest.mark.parametrize(
        "text", [b'{"a": NaN}', b'{"a": 123456789012345678901234567890}', b'{"a": -9223372036854775809}', b'{"a": 1.5}']
    )
    def test_reads_what_the_stdlib_reads(self, text):
        """Values only the stdlib parser accepts still decode, as the SDK (json.loads) decodes them."""
        assert repr(wire.loads(text)) == repr(json.loads(text))

    def test_broken_json_raises_value_error(self):
        """Broken JSON raises a ValueError, which the adapter maps as a malformed answer."""
        with pytest.raises(ValueError, match="Expecting value"):
            wire.loads(b'{"a": ')
