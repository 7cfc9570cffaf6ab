"""`python -m services.router`: the router process."""

from services.router.main import main

main()
