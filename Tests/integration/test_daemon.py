"""Running as a daemon: systemd's notify protocol (READY=1 once listening, STOPPING=1 when
draining) on the test's own notify socket, and the open-files limit: past it, new connections are
refused at once, without spinning, and the gateway serves again once sockets close."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from wsgate_support import ECHO_SCRIPT, HOST, RawClient, raise_nofile, wait_until


def test_ready_and_stopping_reach_the_notify_socket(wsgate, tmp_path):
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(10)
    try:
        server = wsgate({"echo.lua": ECHO_SCRIPT}, {}, workers=1, env={"NOTIFY_SOCKET": str(path)})
        ready = listener.recv(4096).decode()
        assert "READY=1" in ready.split("\n") and f"listening on {HOST}:{server.port}" in ready
        server.stop()
        assert "STOPPING=1" in listener.recv(4096).decode().split("\n")
    finally:
        listener.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 10 ms


def test_past_the_open_files_limit_connections_are_refused_and_service_comes_back(wsgate):
    raise_nofile(2048)
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": {"messagesPerSecond": 0}}, workers=1, nofile=256)
    assert "open files limit 256" in server.log()
    assert "cannot hold limits.maxConnections" in server.log()
    clients = []
    refused = 0
    try:
        for _ in range(400):
            s = socket.create_connection((HOST, server.port), timeout=5)
            s.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            clients.append(s)
        upgraded = 0
        for s in clients:
            try:
                head = s.recv(1024)
            except (ConnectionResetError, socket.timeout):
                head = b""
            if head.startswith(b"HTTP/1.1 101"):
                upgraded += 1
            else:
                refused += 1
        # The refused ones were closed at once (no wait in the backlog), the rest are served.
        assert refused > 0 and upgraded > 0 and upgraded + refused == 400
        assert upgraded <= 256
        # Holding the limit, the gateway does not spin.
        before = _cpu_seconds(server.proc.pid)
        time.sleep(1.0)
        assert _cpu_seconds(server.proc.pid) - before < 0.2
        assert "refusing new connections" in server.log()
    finally:
        for s in clients:
            s.close()
    # Once the sockets are gone, new clients are served again.
    def echoes():
        try:
            client = RawClient(server.port, "/echo")
        except (AssertionError, OSError):
            return None
        client.send_text("back")
        return client.recv_text() == "back" or None
    assert wait_until(echoes, 10)
    assert server.proc.poll() is None
