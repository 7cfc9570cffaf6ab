"""Kept for imports written before the move; use services.common.processes."""

from services.common.processes import ServiceProcess, run_to_exit, start_service

__all__ = ["ServiceProcess", "run_to_exit", "start_service"]
