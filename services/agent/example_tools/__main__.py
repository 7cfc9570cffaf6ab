"""`python -m services.agent.example_tools`: the example ToolService process."""

from services.agent.example_tools.main import main

main()
