"""The management API (admin listener): AWS API Gateway's @connections API. Every status with the
right, a wrong and no token; sockets on every loop; start-up refusals. Client: http.client."""

from __future__ import annotations

import http.client
import json
import re

import pytest

from wsgate_support import (HOST, RawClient, close_code, connect, connect_on_every_loop, free_port, recv, run,
                            run_until_exit, socket_loop)

TOKEN = "s3cret-admin-token"

ECHO_ID = """
if websocketInfo.type == "open" then websocketInfo.send(websocketInfo.socket_id) end
"""


@pytest.fixture(scope="module")
def admin_port():
    return free_port()


@pytest.fixture(scope="module")
def server(wsgate_module, admin_port, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("admin") / "token"
    token_file.write_text(TOKEN + "\n")
    return wsgate_module({"room.lua": ECHO_ID},
                         {"rateLimit": {"messagesPerSecond": 0}, "limits": {"maxMessageBytes": 1000}},
                         workers=2, extra_args=["--admin-port", admin_port, "--admin-token-file", token_file])


class Admin:
    def __init__(self, port, token=TOKEN, scheme="Bearer"):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=10)
        self.token = token
        self.scheme = scheme

    def __call__(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = f"{self.scheme} {self.token}"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def close(self):
        self.conn.close()


@pytest.fixture
def admin(admin_port):
    client = Admin(admin_port)
    yield client
    client.close()


def test_tokens_missing_wrong_and_right(server, admin_port):
    async def main():
        async with connect(server.url("/room")) as ws:
            socket_id = await recv(ws)
            requests = [("GET", "/@connections", None), ("GET", f"/@connections/{socket_id}", None),
                        ("POST", f"/@connections/{socket_id}", b"refused"), ("DELETE", f"/@connections/{socket_id}", None),
                        ("GET", "/api/v1/solution/health", None), ("GET", "/metrics", None)]
            refused = {}
            for scheme, token, expected in (("Bearer", None, 401), ("Bearer", "wrong", 403), ("Bearer", TOKEN + "x", 403),
                                            ("Bearer", TOKEN[:-1], 403), ("Bearer", "", 403), ("Basic", TOKEN, 403)):
                for method, path, body in requests:
                    client = Admin(admin_port, token, scheme)
                    try:
                        status = client(method, path, body)[0]
                    finally:
                        client.close()
                    refused[(scheme, token, method, path)] = (status, expected)
            # The scheme is case-insensitive; the refused POSTs and DELETEs did nothing.
            client = Admin(admin_port, TOKEN, "bearer")
            try:
                health = client("GET", "/api/v1/solution/health")
                posted = client("POST", f"/@connections/{socket_id}", b"accepted")[0]
            finally:
                client.close()
            return refused, health, posted, await recv(ws)

    refused, (status, _, body), posted, first = run(main())
    assert {key: got for key, (got, expected) in refused.items() if got != expected} == {}
    assert status == 200 and body == b"OK"
    assert posted == 204 and first == "accepted"
    assert TOKEN not in server.log()


def test_post_get_delete_a_socket(server, admin):
    async def main():
        async with connect(server.url("/room?x=1"), user_agent_header="pusher-test/1",
                           subprotocols=None) as ws:
            socket_id = await recv(ws)
            listed = json.loads(admin("GET", "/@connections")[2])
            posted = admin("POST", f"/@connections/{socket_id}", body="héllo".encode(),
                           headers={"Content-Type": "text/plain"})
            text = await recv(ws)
            binary_status = admin("POST", f"/@connections/{socket_id}", body=b"\x00\xffbytes",
                                  headers={"Content-Type": "application/octet-stream"})[0]
            binary = await recv(ws)
            bad_utf8 = admin("POST", f"/@connections/{socket_id}", body=b"\xff\xfe")[0]
            too_large = admin("POST", f"/@connections/{socket_id}", body=b"x" * 1001)[0]
            got = admin("GET", f"/@connections/{socket_id}")
            deleted = admin("DELETE", f"/@connections/{socket_id}")[0]
            code, _ = await close_code(ws)
            return socket_id, listed, posted[0], text, binary_status, binary, bad_utf8, too_large, got, deleted, code

    (socket_id, listed, posted, text, binary_status, binary, bad_utf8, too_large, got, deleted, code) = run(main())
    assert socket_id in listed
    assert posted == 204 and text == "héllo"
    assert binary_status == 204 and binary == b"\x00\xffbytes"
    assert bad_utf8 == 400 and too_large == 413
    status, headers, body = got
    info = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert set(info) == {"socket_id", "route", "uri", "connectedAt", "lastActiveAt", "identity", "subprotocol", "claims"}
    assert info["socket_id"] == socket_id and info["route"] == "/room"
    assert info["uri"] == f"ws://{HOST}:{server.port}/room?x=1"
    iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
    assert re.match(iso, info["connectedAt"]) and re.match(iso, info["lastActiveAt"])
    assert info["lastActiveAt"] >= info["connectedAt"]
    assert info["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "pusher-test/1"}
    assert info["subprotocol"] == "" and info["claims"] == {}
    assert deleted == 204 and code == 1000


def test_gone_sockets_are_410(server, admin):
    for method in ("GET", "POST", "DELETE"):
        assert admin(method, "/@connections/no-such-socket", body=b"x" if method == "POST" else None)[0] == 410

    async def closed_socket_id():
        async with connect(server.url("/room")) as ws:
            return await recv(ws)

    closed = run(closed_socket_id())
    for method in ("GET", "POST", "DELETE"):
        assert admin(method, f"/@connections/{closed}", body=b"x" if method == "POST" else None)[0] == 410, method
    assert admin("GET", "/@connections/a/b")[0] == 404
    assert admin("PUT", "/@connections/x")[0] == 405
    assert admin("GET", "/elsewhere")[0] == 404


def test_posts_reach_sockets_on_every_loop_over_one_connection(server, admin):
    async def main():
        sockets, ids = await connect_on_every_loop(server.url("/room"), 4)
        try:
            for i, socket_id in enumerate(ids):
                for n in range(3):
                    assert admin("POST", f"/@connections/{socket_id}", body=f"{i}:{n}".encode())[0] == 204
            return [[await recv(ws) for _ in range(3)] for ws in sockets], ids
        finally:
            for ws in sockets:
                await ws.close()

    received, ids = run(main())
    assert received == [[f"{i}:{n}" for n in range(3)] for i in range(8)]
    assert len({socket_loop(socket_id) for socket_id in ids}) == 2, "the sockets should be on both loops"


def test_a_socket_that_does_not_read_is_429(wsgate):
    port = free_port()
    server = wsgate({"room.lua": ECHO_ID}, {"rateLimit": {"messagesPerSecond": 0},
                                            "limits": {"maxMessageBytes": 65536, "sendQueueBytes": 131072},
                                            "admin": {"port": port, "token": TOKEN}}, workers=1)
    admin = Admin(port)
    reader = RawClient(server.port, "/room", rcvbuf=4096)
    try:
        socket_id = reader.recv_text()
        statuses = []
        for _ in range(200):
            status = admin("POST", f"/@connections/{socket_id}", body=b"y" * 60000)[0]
            statuses.append(status)
            if status == 429:
                break
    finally:
        admin.close()
        reader.sock.close()
    assert statuses[-1] == 429 and set(statuses[:-1]) == {204}


def test_an_admin_port_without_a_token_stops_start_up(tmp_path):
    code, err = run_until_exit(tmp_path / "a", config={"admin": {"port": free_port()}})
    assert code == 2 and "admin.token" in err
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    code, err = run_until_exit(tmp_path / "b", extra_args=["--admin-port", free_port(), "--admin-token-file", empty])
    assert code == 2 and "admin.tokenFile" in err
    code, err = run_until_exit(tmp_path / "c", config={"admin": {"port": 1, "token": TOKEN, "tokn": "x"}})
    assert code == 2 and "admin.tokn" in err


def test_curl_pushes_with_the_token(server, admin_port):
    import subprocess
    import time

    async def main():
        async with connect(server.url("/room")) as ws:
            socket_id = await recv(ws)
            started = time.monotonic()
            body = "p" * 999
            # curl waits (a second) for "100 Continue" after sending this header.
            proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                   "-H", f"Authorization: Bearer {TOKEN}", "-H", "Expect: 100-continue", "--data-binary", body,
                                   f"http://{HOST}:{admin_port}/@connections/{socket_id}"],
                                  capture_output=True, text=True, timeout=10)
            return proc.stdout, await recv(ws), time.monotonic() - started

    code, message, elapsed = run(main())
    assert code == "204" and message == "p" * 999
    assert elapsed < 0.9, elapsed
