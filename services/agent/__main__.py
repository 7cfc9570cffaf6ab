"""`python -m services.agent`: the agent process."""

from services.agent.main import main

main()
