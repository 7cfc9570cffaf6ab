"""The one redaction step for text from elsewhere: configured secrets and credential-shaped strings."""

from __future__ import annotations

import grpc
import pytest

from services.common.errors import MeshError
from services.common.redaction import REDACTED, Redactor

SECRET = "plain-configured-secret-42"


class TestRedactor:
    @pytest.mark.parametrize(
        "text",
        [
            f"key {SECRET} rejected",
            "Authorization: Bearer abc.def-123",
            "x-goog-api-key: some-google-value",
            '{"x-api-key": "anthropic-value"}',
            "GET /v1beta/models/m:generateContent?alt=sse&key=query-value-1",
            "Incorrect API key provided: sk-proj-****************abcd",
            "sk-ant-api03-Zx9_abcdEFGH-ijkl",
            "AIzaSyA1234567890abcdefghijklmnopqrstu",
            "api_key=short-but-named",
        ],
    )
    def test_secret_shapes_are_removed(self, text: str) -> None:
        """The configured value and every credential shape are replaced, leaving the rest of the text."""
        redacted = Redactor([SECRET])(text)
        assert REDACTED in redacted
        secrets = (SECRET, "abc.def-123", "some-google-value", "anthropic-value", "query-value-1", "abcd")
        shapes = ("Zx9_abcdEFGH", "AIzaSyA123", "short-but-named")
        assert [fragment for fragment in (*secrets, *shapes) if fragment in redacted] == []

    def test_ordinary_text_is_untouched(self) -> None:
        """Prose about keys, model names and numbers stay as they were."""
        text = "API key not valid. Please pass a valid API key. model gpt-4o-mini, 429 after 3 tries; ask again"
        assert Redactor([SECRET])(text) == text

    def test_short_configured_values_are_not_replaced_by_value(self) -> None:
        """A configured value shorter than six characters would wreck the text; shapes still apply."""
        assert Redactor(["ab"])("about a cab") == "about a cab"

    def test_error_message_and_metadata_values(self) -> None:
        """A MeshError comes out with message, args and every ErrorInfo value redacted; keys and code stay."""
        error = MeshError(
            grpc.StatusCode.UNAUTHENTICATED,
            f"anthropic: bad key {SECRET}",
            reason="PROVIDER_AUTH_FAILED",
            metadata={"upstream_param": SECRET, "provider": "anthropic"},
        )
        Redactor([SECRET]).error(error)
        assert error.message == f"anthropic: bad key {REDACTED}"
        assert str(error) == error.message
        assert error.metadata == {"upstream_param": REDACTED, "provider": "anthropic"}
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "PROVIDER_AUTH_FAILED")
