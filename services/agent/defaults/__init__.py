"""Embedded agent defaults (profiles.yaml), read when LLMMESH_AGENT_PROFILES is unset."""
