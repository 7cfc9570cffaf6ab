"""The Google Gemini provider adapter (google-genai). Run: `python -m services.providers.google`."""
