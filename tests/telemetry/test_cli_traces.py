"""`llmmesh up --traces` and `llmmesh demo`: the local trace view as a person sees it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

LLMMESH = [sys.executable, "-m", "services.cli"]
# No provider keys (only the mock runs) and no collector of the caller's.
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("OTEL_")}


class _Lines:
    """A process's stdout lines, read on a thread so waits can be bounded."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line)

    def until(self, marker: str, timeout: float) -> list[str]:
        """Lines up to the first containing `marker`; AssertionError after `timeout`."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            lines.append(line)
            if marker in line:
                return lines
        raise AssertionError(f"{marker!r} not printed within {timeout}s:\n{''.join(lines)}")


class TestTraceView:
    def test_up_traces_prints_the_tree_of_an_agent_run(self) -> None:
        """`llmmesh up --traces` prints an agent run as agent → router → attempt → adapter with durations."""
        up = subprocess.Popen(
            [*LLMMESH, "up", "--traces", "--port", "0", "--agent-port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
            bufsize=1,
        )
        output = _Lines(up)
        try:
            lines = output.until("Ctrl-C", 60)
            agent = next(line.split()[1] for line in lines if line.strip().startswith("agent "))
            run = subprocess.run(
                [*LLMMESH, "agent", "--agent", agent, "--model", "mock-agent", "What is the monthly total of 1234?"],
                capture_output=True,
                text=True,
                timeout=30,
                env=ENV,
            )
            assert run.returncode == 0, run.stderr
            tree = "".join(output.until("attempt mock-agent", 30))
            tree += "".join(output.until("llmmesh-provider-mock", 10))
            assert "invoke_agent default" in tree
            assert "├─ chat mock-agent" in tree
            assert "llmmesh-agent" in tree
            assert "llmmesh-router" in tree
            assert " ms" in tree
            up.send_signal(signal.SIGINT)
            assert up.wait(30) == 0
        finally:
            if up.poll() is None:
                up.kill()
                up.wait(5)

    def test_demo_prints_the_agent_runs_trace(self) -> None:
        """`llmmesh demo` (make run) ends with the agent run's trace tree."""
        result = subprocess.run([*LLMMESH, "demo"], capture_output=True, text=True, timeout=90, env=ENV)
        assert result.returncode == 0, result.stderr
        tree = result.stdout.split("(the agent run above, as one trace)")[1]
        assert tree.splitlines()[2].startswith("invoke_agent default")
        assert "attempt mock-agent" in tree
        assert "llmmesh-provider-mock" in tree
