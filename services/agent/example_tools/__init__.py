"""An example ToolService (`python -m services.agent.example_tools`) for tests and demos.

Tools: `wait` (sleeps `ms` milliseconds: concurrency and cancellation made
visible) and `uppercase`. With LLMMESH_TOOL_EVENTS_FILE set it appends one
JSON line per call event (start, end, cancelled) with timestamps, so tests
can see overlap and cancellation from outside the process.
"""
