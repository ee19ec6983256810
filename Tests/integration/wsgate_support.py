"""Shared helpers for the wsgate integration tests.

Everything here talks to a real ``wsgate`` process over loopback TCP: the
process launcher, small asyncio helpers around the ``websockets`` client,
and a raw-socket HTTP/1.1 helper for handshake edge cases that a
well-behaved client library refuses to produce.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from websockets.asyncio.client import connect as _ws_connect
from websockets.exceptions import ConnectionClosed

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STEP_TIMEOUT = 5.0  # every single network wait in the suite is bounded by this
TEST_TIMEOUT = 30.0  # upper bound for one whole asyncio.run(...) of a test
READY_TIMEOUT = 10.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Servers that are currently running; the failure hook in conftest.py attaches
# their logs to the report of a failing test.
LIVE_SERVERS: list["Server"] = []


def wsgate_bin() -> Path:
    env = os.environ.get("WSGATE_BIN")
    if env:
        return Path(env)
    return REPO_ROOT / ".build" / "release" / "wsgate"


def require_binary() -> Path:
    import pytest

    path = wsgate_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"wsgate binary not found at {path}: build it with "
            "`swift build -c release` or point WSGATE_BIN at it",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def write_endpoints(directory: Path, scripts: dict[str, str]) -> Path:
    """Write ``{relative path: Lua source}`` below ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel, source in scripts.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
    return directory


def write_config(path: Path, config: dict | str | None) -> Path:
    if isinstance(config, str):
        path.write_text(config, encoding="utf-8")
    else:
        path.write_text(json.dumps(config or {}, indent=2), encoding="utf-8")
    return path


def command(config_path: Path, endpoints_dir: Path, port: int, workers: int = 2) -> list[str]:
    return [
        str(wsgate_bin()),
        "--config", str(config_path),
        "--host", HOST,
        "--port", str(port),
        "--endpoints", str(endpoints_dir),
        "--workers", str(workers),
    ]


def http_get(port: int, path: str, timeout: float = STEP_TIMEOUT):
    """Plain HTTP/1.1 GET; returns (status, headers dict lower-cased, body bytes)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, body
    finally:
        conn.close()


class Server:
    """A running wsgate process."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path,
                 endpoints_dir: Path, config_path: Path):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.endpoints_dir = endpoints_dir
        self.config_path = config_path

    def url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float = STEP_TIMEOUT) -> str:
        """Poll the log until ``needle`` shows up; return the whole log."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{needle!r} did not appear in the wsgate log within {timeout}s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_lines_with(self, needle: str) -> list[str]:
        return [line for line in self.log().splitlines() if needle in line]

    def stop(self) -> None:
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(workdir: Path, scripts: dict[str, str] | None = None,
                 config: dict | str | None = None, endpoints: Path | None = None,
                 workers: int = 2) -> Server:
    """Start wsgate in ``workdir`` and wait until the health check answers.

    ``scripts`` are written to ``workdir/endpoints`` unless an existing
    ``endpoints`` folder is given.
    """
    require_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    if endpoints is None:
        endpoints = write_endpoints(workdir / "endpoints", scripts or {})
    config_path = write_config(workdir / "config.json", config)
    log_path = workdir / "wsgate.log"
    port = free_port()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command(config_path, endpoints, port, workers),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            cwd=workdir,
        )
    server = Server(proc, port, log_path, endpoints, config_path)
    LIVE_SERVERS.append(server)

    deadline = time.monotonic() + READY_TIMEOUT
    last_error: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise AssertionError(
                f"wsgate exited with code {proc.returncode} during start-up; log:\n{server.log()}"
            )
        try:
            status, _, body = http_get(port, "/api/v1/solution/health", timeout=1)
            if status == 200 and body.strip() == b"OK":
                return server
            last_error = (status, body)
        except OSError as exc:  # refused while the listener is not up yet
            last_error = exc
        time.sleep(0.05)
    server.stop()
    raise AssertionError(
        f"wsgate did not become healthy within {READY_TIMEOUT}s "
        f"(last: {last_error!r}); log:\n{server.log()}"
    )


def run_until_exit(workdir: Path, scripts: dict[str, str] | None = None,
                   config: dict | str | None = None, timeout: float = 10.0):
    """Run wsgate expecting it to refuse to start.

    Returns ``(exit code, stderr text)``; a process still running after
    ``timeout`` seconds is killed and reported as exit code ``None``.
    """
    require_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    endpoints = write_endpoints(workdir / "endpoints", scripts or {})
    config_path = write_config(workdir / "config.json", config)
    proc = subprocess.Popen(
        command(config_path, endpoints, free_port()),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=workdir,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        return None, err.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# asyncio helpers around the websockets client


def run(coro, timeout: float = TEST_TIMEOUT):
    """Run one test coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(url: str, **kwargs):
    """``websockets`` client connect with bounded timeouts and no proxy/keepalive."""
    kwargs.setdefault("open_timeout", STEP_TIMEOUT)
    kwargs.setdefault("close_timeout", 2)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("proxy", None)
    return _ws_connect(url, **kwargs)


async def recv(ws, timeout: float = STEP_TIMEOUT):
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no message arrived within {timeout}s") from None


async def recv_json(ws, timeout: float = STEP_TIMEOUT):
    msg = await recv(ws, timeout)
    assert isinstance(msg, str), f"expected a text message carrying JSON, got {msg!r}"
    return json.loads(msg)


async def recv_until(ws, predicate, timeout: float = STEP_TIMEOUT):
    """Receive messages until ``predicate(msg)`` is true; return (msg, skipped)."""
    skipped = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"no matching message within {timeout}s; got {skipped!r}")
        try:
            msg = await asyncio.wait_for(ws.recv(), remaining)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"no matching message within {timeout}s; got {skipped!r}"
            ) from None
        if predicate(msg):
            return msg, skipped
        skipped.append(msg)


async def drain(ws, duration: float):
    """Collect every message arriving within ``duration`` seconds."""
    got = []
    deadline = asyncio.get_running_loop().time() + duration
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return got
        try:
            got.append(await asyncio.wait_for(ws.recv(), remaining))
        except asyncio.TimeoutError:
            return got


async def close_code(ws, timeout: float = STEP_TIMEOUT):
    """Read until the server closes the connection; return (close code, messages read).

    The code is ``None`` when the TCP connection ended without a close frame.
    Fails the test if the connection is still open after ``timeout`` seconds.
    """
    messages = []

    async def read_all():
        while True:
            messages.append(await ws.recv())

    try:
        await asyncio.wait_for(read_all(), timeout)
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd is not None else None), messages
    except asyncio.TimeoutError:
        raise AssertionError(
            f"connection still open after {timeout}s; messages: {messages!r}"
        ) from None
    raise AssertionError("unreachable")


def as_object(value):
    """Lua's empty table may serialise as [] or {}: treat an empty list as {}."""
    if value == []:
        return {}
    return value


# ---------------------------------------------------------------------------
# raw HTTP / WebSocket handshake over a plain socket


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")


def build_request(port: int, path: str = "/echo", method: str = "GET",
                  headers: dict[str, str | None] | None = None,
                  key: str | None = None) -> bytes:
    """A WebSocket upgrade request; ``headers`` override the defaults, None removes one."""
    base: dict[str, str | None] = {
        "Host": f"{HOST}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or new_key(),
        "Sec-WebSocket-Version": "13",
    }
    lowered = {k.lower(): k for k in base}
    for name, value in (headers or {}).items():
        existing = lowered.get(name.lower())
        if existing is not None:
            del base[existing]
        base[name] = value
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in base.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RawResponse:
    def __init__(self, status: int, reason: str, headers: dict[str, str], head: bytes, rest: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names
        self.head = head
        self.rest = rest  # bytes received after the response head

    def __repr__(self):
        return f"RawResponse({self.status} {self.reason!r}, {self.headers!r})"


def read_head(sock: socket.socket, buf: bytes = b"") -> RawResponse:
    while b"\r\n\r\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise AssertionError(f"connection closed before a complete response head; got {buf!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0].startswith("HTTP/1."), f"not an HTTP response: {lines[0]!r}"
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, reason, headers, head, rest)


def raw_exchange(port: int, request: bytes, timeout: float = STEP_TIMEOUT) -> RawResponse:
    """Send ``request`` on a fresh connection and return the response head."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer and close before reading an oversized
            # request to its end; the answer is still in our receive buffer.
            pass
        return read_head(sock)
