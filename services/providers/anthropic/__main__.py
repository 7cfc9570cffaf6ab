"""`python -m services.providers.anthropic`: the Anthropic adapter process."""

from services.providers.anthropic.main import main

main()
