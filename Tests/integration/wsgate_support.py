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
import ssl
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


def command(config_path: Path, endpoints_dir: Path, port: int, workers: int = 2,
            extra_args: list[str] | None = None) -> list[str]:
    return [
        str(wsgate_bin()),
        "--config", str(config_path),
        "--host", HOST,
        "--port", str(port),
        "--endpoints", str(endpoints_dir),
        "--workers", str(workers),
    ] + [str(arg) for arg in (extra_args or [])]


def _get(conn: http.client.HTTPConnection, path: str):
    """One GET on ``conn``, then close it; returns (status, headers dict lower-cased, body bytes)."""
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, body
    finally:
        conn.close()


def http_get(port: int, path: str, timeout: float = STEP_TIMEOUT):
    """Plain HTTP/1.1 GET; returns (status, headers dict lower-cased, body bytes)."""
    return _get(http.client.HTTPConnection(HOST, port, timeout=timeout), path)


def https_get(port: int, path: str, context: ssl.SSLContext | None = None,
              host: str = "localhost", timeout: float = STEP_TIMEOUT):
    """HTTP/1.1 GET over TLS; returns (status, headers dict lower-cased, body bytes).

    Without ``context`` the certificate is not checked (readiness probes only).
    """
    if context is None:
        context = ssl._create_unverified_context()
    return _get(http.client.HTTPSConnection(host, port, timeout=timeout, context=context), path)


def _speaks_tls(config, extra_args) -> bool:
    """Whether a server started with this config and these flags listens for TLS only."""
    if extra_args and "--tls-cert" in [str(arg) for arg in extra_args]:
        return True
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return False
    return isinstance(config, dict) and bool(config.get("tls"))


class Server:
    """A running wsgate process."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path,
                 endpoints_dir: Path, config_path: Path):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.endpoints_dir = endpoints_dir
        self.config_path = config_path
        self.tls = False  # set by start_server for a port that speaks TLS only

    def url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def wss_url(self, path: str, host: str = "localhost") -> str:
        """A wss:// URL; ``host`` is the name the certificate is checked against."""
        return f"wss://{host}:{self.port}{path}"

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
                 workers: int = 2, extra_args: list[str] | None = None,
                 tls: bool | None = None) -> Server:
    """Start wsgate in ``workdir`` and wait until the health check answers.

    ``scripts`` are written to ``workdir/endpoints`` unless an existing
    ``endpoints`` folder is given. ``extra_args`` go on the command line after
    the usual flags. ``tls`` says the port speaks TLS, so the readiness probe
    uses https (without checking the certificate); by default it is guessed
    from ``--tls-cert`` in ``extra_args`` or a ``tls`` key in ``config``.
    """
    if tls is None:
        tls = _speaks_tls(config, extra_args)
    require_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    if endpoints is None:
        endpoints = write_endpoints(workdir / "endpoints", scripts or {})
    config_path = write_config(workdir / "config.json", config)
    log_path = workdir / "wsgate.log"
    port = free_port()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command(config_path, endpoints, port, workers, extra_args),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            cwd=workdir,
        )
    server = Server(proc, port, log_path, endpoints, config_path)
    server.tls = tls
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
            if tls:
                status, _, body = https_get(port, "/api/v1/solution/health", timeout=1)
            else:
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
                   config: dict | str | None = None, timeout: float = 10.0,
                   extra_args: list[str] | None = None):
    """Run wsgate expecting it to refuse to start.

    Returns ``(exit code, stderr text)``; a process still running after
    ``timeout`` seconds is killed and reported as exit code ``None``.
    """
    require_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    endpoints = write_endpoints(workdir / "endpoints", scripts or {})
    config_path = write_config(workdir / "config.json", config)
    proc = subprocess.Popen(
        command(config_path, endpoints, free_port(), extra_args=extra_args),
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


# ---------------------------------------------------------------------------
# Raw WebSocket clients, bystanders and process probes for the hostile,
# lifecycle and access tests. Everything below only adds to the helpers above.

import struct as _struct
import threading as _threading

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

ECHO_SCRIPT = """
if websocketInfo.type == "data" then
  if websocketInfo.message_type == "data-binary" then
    Websocket.send{socket_id = websocketInfo.socket_id, message = websocketInfo.message, type = "data-binary"}
  else
    websocketInfo.send(websocketInfo.message)
  end
end
"""


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True,
             mask_key: bytes | None = None, rsv: int = 0) -> bytes:
    """Encode one client frame (masked unless told otherwise).

    ``rsv`` is OR-ed into the first byte: 0x40 is RSV1 (a compressed message), 0x20 RSV2, 0x10 RSV3.
    """
    first = (0x80 if fin else 0) | (rsv & 0x70) | (opcode & 0xF)
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = _struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = _struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = _struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    if key == b"\x00\x00\x00\x00" or not payload:
        return head + key + payload
    body = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + key + body


def ws_close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return ws_frame(OP_CLOSE, _struct.pack("!H", code) + reason)


def parse_server_frame(buf: bytes | bytearray, offset: int = 0):
    """Parse one unmasked server frame at ``offset``.

    Returns ``(fin, opcode, payload, next offset)`` or ``None`` when more bytes are needed.
    """
    if len(buf) - offset < 2:
        return None
    b0, b1 = buf[offset], buf[offset + 1]
    n = b1 & 0x7F
    pos = offset + 2
    if n == 126:
        if len(buf) - pos < 2:
            return None
        (n,) = _struct.unpack_from("!H", buf, pos)
        pos += 2
    elif n == 127:
        if len(buf) - pos < 8:
            return None
        (n,) = _struct.unpack_from("!Q", buf, pos)
        pos += 8
    if b1 & 0x80:
        pos += 4  # a masked server frame is a protocol error; callers check the bit
    if len(buf) - pos < n:
        return None
    return bool(b0 & 0x80), b0 & 0x0F, bytes(buf[pos:pos + n]), pos + n


def close_code_of(payload: bytes):
    return _struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class RawClient:
    """A blocking raw-socket WebSocket client.

    ``rcvbuf`` sets SO_RCVBUF before connecting (for clients that do not read).
    ``expect`` is the HTTP status the upgrade must get (101 unless told otherwise).
    ``ssl_context`` speaks TLS to the port (checked against ``server_hostname``).
    ``last_rsv`` holds the RSV bits (0x70 mask of the first byte) of the last frame read.
    """

    def __init__(self, port: int, path: str = "/echo", headers: dict | None = None,
                 rcvbuf: int | None = None, timeout: float = STEP_TIMEOUT, expect: int | None = 101,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str = "localhost"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.last_rsv = 0
        self.key = new_key()
        self.sock.sendall(build_request(port, path, headers=headers, key=self.key))
        self.response = read_head(self.sock)
        if expect is not None:
            assert self.response.status == expect, f"upgrade of {path}: {self.response!r}"
        if self.response.status == 101:
            assert self.response.headers.get("sec-websocket-accept") == accept_for(self.key)
        self.buf = bytearray(self.response.rest)
        self.frames_seen: list = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(ws_frame(OP_TEXT, text.encode("utf-8")))

    def read_frame(self, timeout: float | None = None, answer_pings: bool = True):
        """Next server frame as ``(fin, opcode, payload)``; pings are answered, not returned,
        when ``answer_pings``. Raises EOFError at the end of the stream, AssertionError on timeout."""
        deadline = time.monotonic() + (timeout if timeout is not None else STEP_TIMEOUT)
        while True:
            parsed = parse_server_frame(self.buf)
            if parsed is not None:
                fin, opcode, payload, end = parsed
                assert self.buf[1] & 0x80 == 0, "server frames must not be masked"
                self.last_rsv = self.buf[0] & 0x70
                del self.buf[:end]
                self.frames_seen.append(opcode)
                if opcode == OP_PING and answer_pings:
                    self.sock.sendall(ws_frame(OP_PONG, payload))
                    continue
                return fin, opcode, payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no complete frame within {timeout or STEP_TIMEOUT}s "
                                     f"({len(self.buf)} bytes buffered)")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                raise EOFError("connection reset by the server") from None
            except ssl.SSLError as exc:
                raise EOFError(f"TLS error: {exc}") from None
            if not chunk:
                raise EOFError(f"TCP connection closed with {len(self.buf)} bytes of a partial frame")
            self.buf += chunk

    def recv_text(self, timeout: float | None = None) -> str:
        while True:
            fin, opcode, payload = self.read_frame(timeout)
            if opcode == OP_TEXT:
                return payload.decode("utf-8")
            if opcode == OP_CLOSE:
                raise AssertionError(f"server closed with {close_code_of(payload)} while a text message was expected")

    def read_close(self, timeout: float | None = None, answer_pings: bool = True):
        """Skip frames until the server's close frame; returns ``(code, other frames)``."""
        seen = []
        deadline = time.monotonic() + (timeout if timeout is not None else STEP_TIMEOUT)
        while True:
            remaining = max(0.01, deadline - time.monotonic())
            try:
                fin, opcode, payload = self.read_frame(remaining, answer_pings=answer_pings)
            except EOFError as exc:
                raise AssertionError(f"no close frame before EOF ({exc}); frames seen: {seen[:10]!r}") from None
            if opcode == OP_CLOSE:
                return close_code_of(payload), seen
            seen.append((opcode, payload[:60]))

    def wait_eof(self, timeout: float = STEP_TIMEOUT) -> bool:
        """True when the server ends the TCP connection (EOF or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return True
            if not chunk:
                return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


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
        self._stop = _threading.Event()
        self._thread = None
        self.client = None

    def start(self) -> "Bystander":
        self.client = RawClient(self.port, self.path, headers=self.headers, ssl_context=self.ssl_context)
        self._thread = _threading.Thread(target=self._run, name=f"bystander-{self.label}", daemon=True)
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
        self._stop = _threading.Event()
        self._thread = _threading.Thread(target=self._run, name="rss-watchdog", daemon=True)

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
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def wait_exit(proc: subprocess.Popen, timeout: float):
    """Wait for a process to exit; returns (exit code or None, seconds waited)."""
    started = time.monotonic()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def ask(port: int, path: str, message: str, timeout: float = STEP_TIMEOUT) -> str:
    """Open a raw connection on ``path``, send one text message, return the first text reply."""
    client = RawClient(port, path)
    try:
        client.send_text(message)
        return client.recv_text(timeout)
    finally:
        client.close()


def upgrade_status(port: int, path: str = "/echo", headers: dict | None = None,
                   timeout: float = STEP_TIMEOUT) -> RawResponse:
    """Send one upgrade request on a fresh connection; return the response head."""
    return raw_exchange(port, build_request(port, path, headers=headers), timeout)


# ---------------------------------------------------------------------------
# Throw-away certificates for the wss:// tests, made with the openssl command.

import datetime as _datetime


class TestPKI:
    """A CA and leaves made with ``openssl`` in ``directory``, trusted by no one but the tests.

    Every leaf is issued by ``openssl ca`` from a minimal config, so the serial number and the
    validity window (``not_before`` / ``not_after``) can be chosen. Keys are EC P-256.
    ``parent`` makes this CA an intermediate signed by another ``TestPKI``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, parent: "TestPKI | None" = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        (self.dir / "newcerts").mkdir(exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "index.txt.attr").write_text("unique_subject = no\n")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "ca-req.cnf").write_text(
            "[ req ]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n"
            "[ dn ]\nCN = wsgate throw-away test CA\nO = wsgate tests\n"
            "[ v3_ca ]\nbasicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n")
        (self.dir / "leaf-req.cnf").write_text("[ req ]\ndistinguished_name = dn\n[ dn ]\n")
        (self.dir / "ca.cnf").write_text(
            "[ ca ]\ndefault_ca = testca\n"
            "[ testca ]\n"
            f"database = {self.dir}/index.txt\n"
            f"new_certs_dir = {self.dir}/newcerts\n"
            f"certificate = {self.ca_cert}\n"
            f"private_key = {self.ca_key}\n"
            f"serial = {self.dir}/serial\n"
            "default_md = sha256\npolicy = policy_any\nemail_in_dn = no\n"
            "unique_subject = no\ncopy_extensions = none\n"
            "[ policy_any ]\ncommonName = supplied\norganizationName = optional\n")
        if parent is None:
            self._openssl("req", "-x509", "-config", "ca-req.cnf", "-newkey", "ec",
                          "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3",
                          "-keyout", "ca.key", "-out", "ca.pem")
        else:
            self._openssl("req", "-new", "-config", "leaf-req.cnf", "-newkey", "ec",
                          "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                          "-subj", f"/CN=wsgate throw-away intermediate {self.dir.name}",
                          "-keyout", "ca.key", "-out", "ca.csr")
            ext = self.dir / "ca.ext"
            ext.write_text("basicConstraints = critical, CA:TRUE, pathlen:0\n"
                           "keyUsage = critical, keyCertSign, cRLSign\n"
                           "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
            parent._openssl("ca", "-batch", "-config", "ca.cnf", "-notext", "-days", "3",
                            "-in", str(self.dir / "ca.csr"), "-out", str(self.ca_cert), "-extfile", str(ext))

    def _openssl(self, *args: str) -> str:
        proc = subprocess.run(["openssl", *args], cwd=self.dir, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")
        return proc.stdout

    @staticmethod
    def _asn1_time(moment: _datetime.datetime) -> str:
        return moment.astimezone(_datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")

    def leaf(self, name: str, cn: str = "localhost",
             sans: tuple[str, ...] = ("DNS:localhost", "IP:127.0.0.1"),
             serial: int | None = None,
             not_before: _datetime.datetime | None = None,
             not_after: _datetime.datetime | None = None) -> tuple[Path, Path]:
        """Issue a server certificate; returns ``(name-cert.pem, name-key.pem)``.

        The validity defaults to one hour ago until two days from now.
        """
        now = _datetime.datetime.now(_datetime.timezone.utc)
        not_before = not_before or now - _datetime.timedelta(hours=1)
        not_after = not_after or now + _datetime.timedelta(days=2)
        cert, key, csr, ext = (self.dir / f"{name}-cert.pem", self.dir / f"{name}-key.pem",
                               self.dir / f"{name}.csr", self.dir / f"{name}.ext")
        if serial is not None:
            (self.dir / "serial").write_text(f"{serial:04X}\n")
        ext.write_text("basicConstraints = CA:FALSE\n"
                       "keyUsage = critical, digitalSignature\n"
                       "extendedKeyUsage = serverAuth\n"
                       "subjectKeyIdentifier = hash\n"
                       "authorityKeyIdentifier = keyid\n"
                       + (f"subjectAltName = {', '.join(sans)}\n" if sans else ""))
        self._openssl("req", "-new", "-config", "leaf-req.cnf", "-newkey", "ec",
                      "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-subj", f"/CN={cn}/O=wsgate tests {name}", "-keyout", key.name, "-out", csr.name)
        self._openssl("ca", "-batch", "-config", "ca.cnf", "-notext", "-in", csr.name, "-out", cert.name,
                      "-startdate", self._asn1_time(not_before), "-enddate", self._asn1_time(not_after),
                      "-extfile", ext.name)
        return cert, key

    def encrypted_key(self, key: Path, passphrase: str = "secret") -> Path:
        """A copy of ``key`` encrypted with a passphrase (PEM ``ENCRYPTED PRIVATE KEY``)."""
        out = key.with_name(key.stem + "-encrypted.pem")
        self._openssl("pkey", "-in", str(key), "-aes256", "-passout", f"pass:{passphrase}", "-out", str(out))
        return out

    def serial_of(self, cert: Path) -> int:
        out = self._openssl("x509", "-in", str(cert), "-noout", "-serial")
        return int(out.strip().split("=", 1)[1], 16)

    def spki_sha256_base64(self, cert: Path) -> str:
        """base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's SPKI pin)."""
        pub = self._openssl("x509", "-in", str(cert), "-noout", "-pubkey")
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.encode(),
                             capture_output=True, check=True).stdout
        return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")

    def client_context(self, check_hostname: bool = True) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.check_hostname = check_hostname
        return context


def peer_serial(ssl_object) -> int:
    """Serial number of the certificate the server presented (a verified connection)."""
    return int(ssl_object.getpeercert()["serialNumber"], 16)


# ---------------------------------------------------------------------------
# Upstream WebSocket servers for the outbound-connection and ``wsgate probe`` tests: a Python
# ``websockets`` server on its own thread (plain, or TLS with a ``TestPKI`` leaf) that records what
# every peer sent and how it closed.

import logging as _logging


def wait_until(condition, timeout: float = STEP_TIMEOUT, what: str = "condition", interval: float = 0.02):
    """Poll ``condition()`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


class UpstreamPeer:
    """One connection an ``Upstream`` accepted."""

    def __init__(self, ws):
        self.ws = ws
        self.path = ws.request.path
        self.headers = ws.request.headers  # case-insensitive lookups
        self.messages: list = []  # str for text, bytes for binary, in arrival order
        self.close_code: int | None = None  # the code the peer sent; 1006 for none
        self.ended = _threading.Event()

    def wait_messages(self, count: int, timeout: float = STEP_TIMEOUT) -> list:
        wait_until(lambda: len(self.messages) >= count, timeout,
                   f"{count} messages at the upstream (got {self.messages!r})")
        return list(self.messages)

    def wait_closed(self, timeout: float = STEP_TIMEOUT) -> int | None:
        if not self.ended.wait(timeout):
            raise AssertionError(f"upstream connection still open after {timeout}s")
        return self.close_code


class Upstream:
    """A ``websockets`` server on a background thread.

    ``greeting`` (str or bytes) is sent to every peer on connect; ``echo`` sends every message
    back; ``close_with=(code, reason)`` closes right after the greeting; ``require_header=(name,
    value)`` answers 403 to an upgrade without that header value. ``port`` reuses a port (a
    restart). ``peers`` lists every accepted connection in order.
    """

    __test__ = False

    def __init__(self, *, greeting=None, echo: bool = False, close_with=None, require_header=None,
                 ssl_context: ssl.SSLContext | None = None, host: str = HOST, port: int = 0):
        self.greeting = greeting
        self.echo = echo
        self.close_with = close_with
        self.require_header = require_header
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.peers: list[UpstreamPeer] = []
        self.refused: list[str] = []  # paths of upgrades answered 403
        self.server_names: list = []  # the SNI of every TLS handshake (None when none was sent)
        if ssl_context is not None:
            ssl_context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: _threading.Thread | None = None
        self._server = None
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    # lifecycle

    def start(self) -> "Upstream":
        ready = _threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = _threading.Thread(target=self._run, args=(ready,), name="upstream", daemon=True)
        self._thread.start()
        if not ready.wait(STEP_TIMEOUT):
            raise AssertionError("upstream server did not start")
        if self._error is not None:
            raise AssertionError(f"upstream server did not start: {self._error!r}")
        return self

    def _run(self, ready: _threading.Event) -> None:
        from websockets.asyncio.server import serve

        quiet = _logging.getLogger("wsgate-tests.upstream")

        async def main():
            try:
                self._server = await serve(self._handle, self.host, self.port, ssl=self.ssl_context,
                                           process_request=self._check_request, ping_interval=None,
                                           close_timeout=2, logger=quiet)
            except BaseException as exc:  # reported by start()
                self._error = exc
                ready.set()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            self._stopped = asyncio.Event()
            ready.set()
            await self._stopped.wait()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def _check_request(self, connection, request):
        if self.require_header is not None:
            name, value = self.require_header
            if request.headers.get(name) != value:
                self.refused.append(request.path)
                return connection.respond(403, f"header {name} missing or wrong\n")
        return None

    async def _handle(self, ws) -> None:
        peer = UpstreamPeer(ws)
        self.peers.append(peer)
        try:
            if self.greeting is not None:
                await ws.send(self.greeting)
            if self.close_with is not None:
                await ws.close(*self.close_with)
                return
            async for message in ws:
                peer.messages.append(message)
                if self.echo:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            peer.close_code = ws.close_code
            peer.ended.set()

    def _call(self, coro, timeout: float = STEP_TIMEOUT):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Close every connection with 1001 and stop listening."""
        self._shutdown(abrupt=False)

    def kill(self) -> None:
        """Vanish like a killed process: stop listening and reset every connection (no close frame)."""
        self._shutdown(abrupt=True)

    def _shutdown(self, abrupt: bool) -> None:
        if self._thread is None or not self._thread.is_alive() or self._stopped is None:
            return

        async def shutdown():
            if abrupt:
                self._server.close(close_connections=False)
                for peer in self.peers:
                    peer.ws.transport.abort()
            else:
                self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), STEP_TIMEOUT)
            finally:
                self._stopped.set()

        try:
            self._call(shutdown(), STEP_TIMEOUT + 2)
        finally:
            self._thread.join(STEP_TIMEOUT)

    # use

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def send(self, message, peer: UpstreamPeer | None = None) -> None:
        """Send a message (str: text, bytes: binary, a list of either: one fragmented message) to
        ``peer`` (default: the latest one)."""
        peer = peer or self.peers[-1]
        self._call(peer.ws.send(message))

    def ping(self, peer: UpstreamPeer | None = None, timeout: float = STEP_TIMEOUT) -> None:
        """Ping ``peer`` (default: the latest one) and wait for its pong."""
        peer = peer or self.peers[-1]

        async def ping():
            waiter = await peer.ws.ping(b"are you there")
            await asyncio.wait_for(waiter, timeout)

        self._call(ping(), timeout + 1)

    def wait_peer(self, count: int = 1, timeout: float = STEP_TIMEOUT) -> UpstreamPeer:
        """Wait until ``count`` connections were accepted; return the ``count``-th."""
        wait_until(lambda: len(self.peers) >= count, timeout, f"connection #{count} at the upstream on port {self.port}")
        return self.peers[count - 1]


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


class SilentListener:
    """A TCP listener that accepts (the kernel does) but never answers: a handshake that hangs."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def url(self, path: str = "/") -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def __enter__(self) -> "SilentListener":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
