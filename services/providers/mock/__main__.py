"""`python -m services.providers.mock`: the mock provider process."""

from services.providers.mock.main import main

main()
