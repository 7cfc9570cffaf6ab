"""`python -m services.cli`: the llmmesh command."""

from services.cli.main import main

main()
