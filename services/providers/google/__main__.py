"""`python -m services.providers.google`: the Gemini adapter process."""

from services.providers.google.main import main

main()
