"""WebSocket frames by hand: encoding client frames, parsing server frames, and ``RawClient``, a
blocking raw-socket client for the hostile, lifecycle and access tests."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time

from .constants import HOST, STEP_TIMEOUT
from .http import accept_for, build_request, new_key, read_head

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True,
             mask_key: bytes | None = None, rsv: int = 0) -> bytes:
    """Encode one client frame (masked unless told otherwise).

    ``rsv`` is OR-ed into the first byte: 0x40 is RSV1 (a compressed message), 0x20 RSV2, 0x10 RSV3.
    """
    first = (0x80 if fin else 0) | (rsv & 0x70) | (opcode & 0xF)
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    if key == b"\x00\x00\x00\x00" or not payload:
        return head + key + payload
    body = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + key + body


def ws_close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return ws_frame(OP_CLOSE, struct.pack("!H", code) + reason)


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
        (n,) = struct.unpack_from("!H", buf, pos)
        pos += 2
    elif n == 127:
        if len(buf) - pos < 8:
            return None
        (n,) = struct.unpack_from("!Q", buf, pos)
        pos += 8
    if b1 & 0x80:
        pos += 4  # a masked server frame is a protocol error; callers check the bit
    if len(buf) - pos < n:
        return None
    return bool(b0 & 0x80), b0 & 0x0F, bytes(buf[pos:pos + n]), pos + n


def close_code_of(payload: bytes):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


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


def ask(port: int, path: str, message: str, timeout: float = STEP_TIMEOUT) -> str:
    """Open a raw connection on ``path``, send one text message, return the first text reply."""
    client = RawClient(port, path)
    try:
        client.send_text(message)
        return client.recv_text(timeout)
    finally:
        client.close()
