"""Watching the service from an innocent client's side while a test attacks it, and printing the
result lines the hostile tests report."""

from __future__ import annotations

import ssl
import threading
import time

from .constants import STEP_TIMEOUT
from .frames import RawClient, ws_close_frame


class Bystander:
    """An innocent client echoing numbered messages on its own thread.

    Each message ``<label>-<n>`` is sent once the previous echo arrived (after
    ``interval`` seconds); every echo must be exactly the message sent, so a lost,
    altered or reordered message is caught. ``stop()`` ends it with a close
    handshake; ``assert_intact(context)`` fails the test if anything went wrong.
    """

    def __init__(self, port: int, path: str = "/echo", interval: float = 0.02,
                 label: str = "bystander", reply_timeout: float = STEP_TIMEOUT,
                 headers: dict | None = None, ssl_context: ssl.SSLContext | None = None):
        self.port = port
        self.ssl_context = ssl_context
        self.path = path
        self.headers = headers
        self.interval = interval
        self.label = label
        self.reply_timeout = reply_timeout
        self.sent = 0
        self.received = 0
        self.latencies: list[float] = []
        self.problems: list[str] = []
        self.close_code = None
        self._stop = threading.Event()
        self._thread = None
        self.client = None

    def start(self) -> "Bystander":
        self.client = RawClient(self.port, self.path, headers=self.headers, ssl_context=self.ssl_context)
        self._thread = threading.Thread(target=self._run, name=f"bystander-{self.label}", daemon=True)
        self._thread.start()
        # Wait for the first echo so the bystander is known to be served before the attack.
        deadline = time.monotonic() + STEP_TIMEOUT
        while self.received == 0 and not self.problems and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.received > 0, f"bystander never got its first echo: {self.problems!r}"
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            message = f"{self.label}-{n}"
            started = time.monotonic()
            try:
                self.client.send_text(message)
                self.sent += 1
                got = self.client.recv_text(self.reply_timeout)
            except (AssertionError, EOFError, OSError) as exc:
                self.problems.append(f"message {n}: {exc}")
                return
            self.latencies.append(time.monotonic() - started)
            if got != message:
                self.problems.append(f"sent {message!r}, got {got!r}")
                return
            self.received += 1
            n += 1
            if self.interval:
                self._stop.wait(self.interval)

    def stop(self, close: bool = True) -> "Bystander":
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.reply_timeout + 2)
            if self._thread.is_alive():
                self.problems.append("bystander thread did not finish")
        if close and self.client is not None and not self.problems:
            try:
                self.client.send(ws_close_frame(1000))
                self.close_code, _ = self.client.read_close(STEP_TIMEOUT)
            except (AssertionError, OSError) as exc:
                self.problems.append(f"close handshake: {exc}")
        if self.client is not None:
            self.client.close()
        return self

    @property
    def max_latency(self) -> float:
        return max(self.latencies) if self.latencies else float("nan")

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    def summary(self) -> str:
        return (f"bystander {self.label}: {self.sent} sent, {self.received} echoed in order, "
                f"max latency {self.max_latency * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms, "
                f"problems {self.problems!r}")

    def assert_intact(self, context: str = "", max_latency: float | None = None) -> None:
        assert not self.problems, f"{context}: {self.summary()}"
        assert self.sent == self.received and self.received > 0, f"{context}: {self.summary()}"
        if max_latency is not None:
            assert self.max_latency <= max_latency, (
                f"{context}: bystander latency over {max_latency * 1000:.0f} ms: {self.summary()}")


def report(line: str) -> str:
    """Print one result line (shown with ``pytest -s``) and return it for assertion messages."""
    print(f"\n[wsgate-report] {line}", flush=True)
    return line
