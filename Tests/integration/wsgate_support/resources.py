"""What a process holds: resident memory, open descriptors, an RSS watchdog that kills a runaway
server, and this test process's own open-files limit."""

from __future__ import annotations

import os
import resource
import subprocess
import threading


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB (VmRSS), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, PermissionError):
        return None


class RssWatchdog:
    """Samples a process's RSS every 20 ms and records the peak.

    A process whose RSS passes ``kill_above_mib`` is killed on the spot (a
    missing memory limit must not take the test machine down); ``killed``
    tells the test.
    """

    def __init__(self, proc: subprocess.Popen, kill_above_mib: int = 1536):
        self.proc = proc
        self.kill_above = kill_above_mib * 1024
        self.peak_kib = 0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watchdog", daemon=True)

    def __enter__(self) -> "RssWatchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kib(self.proc.pid)
            if value is None:
                return
            self.peak_kib = max(self.peak_kib, value)
            if value > self.kill_above and self.proc.poll() is None:
                self.killed = True
                self.proc.kill()
                return
            self._stop.wait(0.02)

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft open-files limit towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
