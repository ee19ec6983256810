"""A throw-away ``redis-server`` for the cluster tests: a free loopback port, no persistence, and
the faults the tests need (stop and continue, kill, restart empty on the same port)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .constants import HOST, READY_TIMEOUT
from .process import free_port


class RedisServer:
    def __init__(self, workdir: Path, password: str | None = None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (scripts/test installs it: apt-get install redis-server)")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def start(self) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self.log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()[-2000:]}")
            if self.command("PING") is not None:
                return self
            time.sleep(0.02)
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def command(self, *args: str):
        """One command over a fresh connection (AUTH first when there is a password): the reply
        as Python values (bytes, int, list, None for nil; an error reply as an Exception), or
        None when nothing answers."""
        parts = ([("AUTH", self.password)] if self.password and args[0] != "PING" else []) + [args]
        payload = b"".join(b"*%d\r\n" % len(p) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in p)
                           for p in parts)
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(payload)
                data, replies = b"", []
                while len(replies) < len(parts):
                    chunk = sock.recv(65536)
                    if not chunk:
                        return None
                    data += chunk
                    while len(replies) < len(parts):
                        parsed = _parse(data, 0)
                        if parsed is None:
                            break
                        value, used = parsed
                        replies.append(value)
                        data = data[used:]
                return replies[-1]
        except OSError:
            return None

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart_empty(self):
        """Kill it and start a fresh one, with nothing in it, on the same port."""
        self.kill()
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _parse(data: bytes, at: int):
    """One RESP2 value at ``at``: (value, end), or None while incomplete."""
    line_end = data.find(b"\r\n", at)
    if line_end < 0:
        return None
    kind, rest = data[at:at + 1], data[at + 1:line_end]
    after = line_end + 2
    if kind == b"+":
        return rest, after
    if kind == b"-":
        return Exception(rest.decode()), after
    if kind == b":":
        return int(rest), after
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None, after
        if len(data) < after + length + 2:
            return None
        return data[after:after + length], after + length + 2
    if kind == b"*":
        count = int(rest)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            parsed = _parse(data, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    raise ValueError(f"not RESP: {data[at:at + 20]!r}")


class FreezingProxy:
    """A TCP proxy in front of Redis that can freeze the subscriber connections: what Redis sends
    them stops coming through, and nothing fails (a wedged connection, as behind a stuck NAT).
    A connection is a subscriber once the client has sent SUBSCRIBE on it."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.states: list[dict] = []
        self.subscribers_seen = 0
        self._stop = False
        self._threads = []

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def start(self) -> "FreezingProxy":
        self._spawn(self._accept)
        return self

    def _spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            server = socket.create_connection((HOST, self.upstream_port))
            state = {"subscriber": False, "frozen": False}
            self.states.append(state)
            self._spawn(self._pump, client, server, state, True)
            self._spawn(self._pump, server, client, state, False)

    def _pump(self, source, target, state, upstream):
        source.settimeout(0.2)
        while not self._stop:
            try:
                data = source.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            if upstream and b"SUBSCRIBE" in data.upper() and not state["subscriber"]:
                state["subscriber"] = True
                self.subscribers_seen += 1
            if not upstream and state["frozen"]:
                continue  # swallowed: the wedge
            try:
                target.sendall(data)
            except OSError:
                break
        for s in (source, target):
            try:
                s.close()
            except OSError:
                pass

    def freeze_subscribers(self):
        """Freezes the subscriber connections open now; later ones go through."""
        for state in self.states:
            if state["subscriber"]:
                state["frozen"] = True

    def stop(self):
        self._stop = True
        self.listener.close()
