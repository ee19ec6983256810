"""RFC 6455 framing, checked with hand-made frames on a raw socket after a valid handshake."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from wsgate_support import (
    ECHO_SCRIPT as ECHO,
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    STEP_TIMEOUT,
    accept_for,
    build_request,
    new_key,
    read_head,
    ws_frame,
)

MAX_MESSAGE = 1024


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module(
        {"echo.lua": ECHO},
        {"limits": {"maxMessageBytes": MAX_MESSAGE}, "rateLimit": {"messagesPerSecond": 0}},
    )


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame; ``rsv`` is the three RSV bits as a number (4 = RSV1)."""
    return ws_frame(opcode, payload, fin=fin, masked=masked, rsv=(rsv & 0x7) << 4)


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason)


class RawWebSocket:
    """A WebSocket client connection driven byte by byte."""

    def __init__(self, port: int, path: str = "/echo"):
        self.sock = socket.create_connection((HOST, port), timeout=STEP_TIMEOUT)
        key = new_key()
        self.sock.sendall(build_request(port, path, key=key))
        resp = read_head(self.sock)
        assert resp.status == 101, resp
        assert resp.headers.get("sec-websocket-accept") == accept_for(key)
        self.buf = resp.rest

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"TCP connection closed with {len(self.buf)} of {n} bytes read")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame(self):
        """Return (fin, opcode, payload) of the next server frame."""
        b0, b1 = self._read_exact(2)
        assert b1 & 0x80 == 0, "server frames must not be masked"
        assert b0 & 0x70 == 0, f"server frame has RSV bits set: {b0:#04x}"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exact(8))
        return bool(b0 & 0x80), b0 & 0x0F, self._read_exact(n)

    def read_close_code(self):
        """Skip data frames until the server's close frame; return its code (None if empty)."""
        seen = []
        while True:
            try:
                fin, opcode, payload = self.read_frame()
            except EOFError as exc:
                raise AssertionError(f"no close frame before EOF ({exc}); frames seen: {seen!r}") from None
            except socket.timeout:
                raise AssertionError(f"no close frame within {STEP_TIMEOUT}s; frames seen: {seen!r}") from None
            if opcode == OP_CLOSE:
                if not payload:
                    return None
                assert len(payload) >= 2, f"close payload of 1 byte: {payload!r}"
                return struct.unpack("!H", payload[:2])[0]
            seen.append((opcode, payload))

    def tcp_closed(self) -> bool:
        """True when the server ends the TCP connection within the step timeout."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


@pytest.fixture
def ws(server):
    conn = RawWebSocket(server.port)
    yield conn
    conn.close()


def test_masked_text_is_echoed(ws):
    ws.send(frame(OP_TEXT, b"hello frames"))
    assert ws.read_frame() == (True, OP_TEXT, b"hello frames")


def test_masked_binary_is_echoed_as_binary(ws):
    ws.send(frame(OP_BINARY, b"\x00\x01\xfe\xff"))
    assert ws.read_frame() == (True, OP_BINARY, b"\x00\x01\xfe\xff")


def test_a_burst_larger_than_one_read_is_echoed_whole(ws):
    # About 300 KB arrive at once, several times what one read takes: the socket is read until
    # a read comes up short, or the rest would wait for input that never comes.
    messages = [(b"%05d" % i) * 20 for i in range(3000)]
    ws.send(b"".join(frame(OP_TEXT, m) for m in messages))
    for m in messages:
        assert ws.read_frame() == (True, OP_TEXT, m)


def test_unmasked_client_frame_is_1002(ws):
    ws.send(frame(OP_TEXT, b"not masked", masked=False))
    assert ws.read_close_code() == 1002


def test_reserved_opcode_is_1002(ws):
    ws.send(frame(0x3, b"reserved"))
    assert ws.read_close_code() == 1002


def test_rsv1_without_extension_is_1002(ws):
    ws.send(frame(OP_TEXT, b"compressed?", rsv=0b100))
    assert ws.read_close_code() == 1002


def test_ping_gets_pong_with_same_payload(ws):
    ws.send(frame(OP_PING, b"are you there"))
    assert ws.read_frame() == (True, OP_PONG, b"are you there")


def test_fragmented_text_with_interleaved_ping_is_echoed_whole(ws):
    ws.send(frame(OP_TEXT, b"Hel", fin=False))
    ws.send(frame(OP_PING, b"mid"))
    ws.send(frame(OP_CONT, b"lo, ", fin=False))
    ws.send(frame(OP_CONT, "wörld".encode(), fin=True))
    frames = [ws.read_frame(), ws.read_frame()]
    assert (True, OP_PONG, b"mid") in frames
    assert (True, OP_TEXT, "Hello, wörld".encode()) in frames


def test_invalid_utf8_text_is_1007(ws):
    ws.send(frame(OP_TEXT, b"bad \xff\xfe utf8"))
    assert ws.read_close_code() == 1007


def test_message_within_limit_is_echoed(ws):
    payload = b"m" * 1000
    ws.send(frame(OP_TEXT, payload))
    assert ws.read_frame() == (True, OP_TEXT, payload)


def test_message_over_max_bytes_is_1009(ws):
    ws.send(frame(OP_TEXT, b"x" * 2000))
    assert ws.read_close_code() == 1009


def test_fragmented_message_over_max_bytes_is_1009(ws):
    ws.send(frame(OP_TEXT, b"y" * 700, fin=False))
    ws.send(frame(OP_CONT, b"y" * 700, fin=True))
    assert ws.read_close_code() == 1009


def test_close_1000_is_answered_and_tcp_closed(ws):
    ws.send(close_frame(1000, b"bye"))
    assert ws.read_close_code() == 1000
    assert ws.tcp_closed(), "server kept the TCP connection open after the close handshake"


def test_server_closes_at_once_after_the_close_handshake(ws):
    # RFC 6455 7.1.1: once both close frames are exchanged the server closes the TCP connection,
    # without waiting for the client's end. Bytes the client sends afterwards meet a closed socket,
    # which resets them; a socket still draining input would read and drop them silently.
    ws.send(close_frame(1000, b"bye"))
    assert ws.read_close_code() == 1000
    assert ws.tcp_closed()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(50):
            ws.sock.sendall(b"x")
            time.sleep(0.02)


def test_close_with_invalid_code_is_1002(ws):
    ws.send(close_frame(999))
    assert ws.read_close_code() == 1002
