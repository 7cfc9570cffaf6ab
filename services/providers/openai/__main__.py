"""`python -m services.providers.openai`: the OpenAI adapter process."""

from services.providers.openai.main import main

main()
