"""HTTP/1.1 over loopback: GETs through ``http.client``, and hand-made WebSocket upgrade
requests on a plain socket for handshake edge cases a well-behaved client library refuses to
produce."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl

from .constants import HOST, STEP_TIMEOUT, WS_GUID


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


def upgrade_status(port: int, path: str = "/echo", headers: dict | None = None,
                   timeout: float = STEP_TIMEOUT) -> RawResponse:
    """Send one upgrade request on a fresh connection; return the response head."""
    return raw_exchange(port, build_request(port, path, headers=headers), timeout)
