"""Starting the Gemini adapter: key variables, and the HTTP transport the SDK ends up on."""

from __future__ import annotations

import importlib.util

import pytest

from services.common.processes import run_to_exit
from services.providers.google.adapter import GoogleAdapter
from services.providers.google.main import api_key_from_env


class TestStartup:
    def test_missing_key_refuses_to_start(self) -> None:
        """Without GEMINI_API_KEY / GOOGLE_API_KEY the process exits 2 naming the variable."""
        result = run_to_exit(["-m", "services.providers.google"], env={"GEMINI_API_KEY": "", "GOOGLE_API_KEY": " "})
        assert result.returncode == 2
        assert "GEMINI_API_KEY" in result.stderr

    def test_google_api_key_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With both set, GOOGLE_API_KEY is used, as google-genai itself does."""
        monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
        monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
        assert api_key_from_env() == "google-key"

    def test_gemini_api_key_alone(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """GEMINI_API_KEY alone is enough."""
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        monkeypatch.setenv("GEMINI_API_KEY", " gemini-key ")
        assert api_key_from_env() == "gemini-key"


class TestTransport:
    def test_aiohttp_not_installed(self) -> None:
        """aiohttp (whose path retries dropped connections after 1-10 s) is not in the environment."""
        assert importlib.util.find_spec("aiohttp") is None

    def test_sdk_pinned_to_adapter_httpx2_client(self) -> None:
        """The SDK uses the adapter's own httpx2 client, never aiohttp, and has no retry options."""
        adapter = GoogleAdapter(api_key="test-key", base_url="http://127.0.0.1:9", api_version="v1beta")
        api_client = adapter._client._api_client
        assert api_client._async_httpx_client is adapter._http
        assert not api_client._use_aiohttp()
        assert api_client._http_options.retry_options is None
