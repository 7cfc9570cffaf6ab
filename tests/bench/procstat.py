"""CPU time and memory of a process, read from /proc (Linux).

CPU: utime + stime of /proc/<pid>/stat, in seconds. Memory: VmHWM (peak
resident set) and VmRSS of /proc/<pid>/status; writing "5" to
/proc/<pid>/clear_refs resets the peak, so a phase's own peak can be read.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    # The command name may contain spaces and parentheses: split after the last ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def memory_kib(pid: int) -> dict[str, int]:
    """{"VmHWM": peak RSS, "VmRSS": current RSS} in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


def reset_peak_rss(pid: int) -> bool:
    """Resets VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "load_average_at_start": os.getloadavg(),
        "kernel": os.uname().release,
    }
