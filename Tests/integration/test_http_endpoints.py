"""HTTP endpoint scripts (NAME.http.lua): a backend pushes to sockets with a plain HTTP request;
the script sees `request`, fills `response`, may call every service and wait. Clients: Python's
http.client (keep-alive) and raw sockets."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from wsgate_support import HOST, connect, recv, recv_json, run

# POST /notify/{user}: the body goes to every socket of /inbox?user=<user>; the answer says to how many.
NOTIFY = """
local sent = 0
for _, id in ipairs(Websocket.list()) do
  local info = Websocket.info{socket_id = id}
  if info and info.route == "/inbox" and info.parameters.user == request.parameters.user then
    if not Websocket.send{socket_id = id, message = request.body} then sent = sent + 1 end
  end
end
response.code = sent > 0 and 200 or 404
response.message = {sent = sent, user = request.parameters.user}
"""

INBOX = """
if websocketInfo.type == "open" then websocketInfo.send("ready") end
"""

# Reports what it sees.
MIRROR = """
response.headers["X-Route"] = request.route
response.message = {method = request.method, uri = request.uri, route = request.route, path = request.path,
                    headers = request.headers, parameters = request.parameters, body = request.body,
                    remote_addr = request.remote_addr}
"""

PLAIN = """
response.code = tonumber(request.parameters.code or "200")
response.headers["Content-Type"] = "text/csv"
response.message = "a,b\\n1,2\\n"
"""

BROKEN = """
if request.parameters.how == "error" then error("deliberate-http-error") end
if request.parameters.how == "code" then response.code = "teapot" end
if request.parameters.how == "header" then response.headers["X-Bad"] = "a\\r\\nInjected: 1" end
if request.parameters.how == "json" then response.message = {f = function() end} end
"""

SLOW = """
sleep(tonumber(request.parameters.ms or "300"))
response.message = "slept"
"""

# The same path as a WebSocket route and as an HTTP route.
SHARED_WS = """
if websocketInfo.type == "data" then websocketInfo.send("ws:" .. websocketInfo.message) end
"""
SHARED_HTTP = """
response.message = "http:" .. request.method
"""

SCRIPTS = {
    "notify/{user}.http.lua": NOTIFY,
    "inbox.lua": INBOX,
    "mirror/{thing}.http.lua": MIRROR,
    "plain.http.lua": PLAIN,
    "broken.http.lua": BROKEN,
    "slow.http.lua": SLOW,
    "shared.lua": SHARED_WS,
    "shared.http.lua": SHARED_HTTP,
}


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module(SCRIPTS, {"rateLimit": {"messagesPerSecond": 0}, "limits": {"maxHttpBodyBytes": 1000}},
                         workers=2)


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict((k.lower(), v) for k, v in response.getheaders()), response.read()
    finally:
        conn.close()


def test_a_backend_pushes_to_a_users_sockets(server):
    async def main():
        async with connect(server.url("/inbox?user=ann")) as a1, connect(server.url("/inbox?user=ann")) as a2, \
                connect(server.url("/inbox?user=bob")) as b:
            for ws in (a1, a2, b):
                assert await recv(ws) == "ready"
            status, headers, body = request(server, "POST", "/notify/ann", body=b"hello ann")
            return status, headers, json.loads(body), await recv(a1), await recv(a2)

    status, headers, body, m1, m2 = run(main())
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == {"sent": 2, "user": "ann"}
    assert m1 == m2 == "hello ann"
    status, _, body = request(server, "POST", "/notify/nobody", body=b"x")
    assert status == 404 and json.loads(body)["sent"] == 0


def test_the_request_global(server):
    status, headers, body = request(server, "PUT", "/mirror/a%20b?x=1&thing=ignored", body=b"the body",
                                    headers={"X-Custom": "v"})
    seen = json.loads(body)
    assert status == 200 and headers["x-route"] == "/mirror/{thing}"
    assert seen["method"] == "PUT" and seen["route"] == "/mirror/{thing}" and seen["path"] == "/mirror/a%20b"
    assert seen["uri"] == f"http://{HOST}:{server.port}/mirror/a%20b?x=1&thing=ignored"
    assert seen["parameters"] == {"thing": "a b", "x": "1"}
    assert seen["headers"]["x-custom"] == "v" and seen["body"] == "the body"
    assert seen["remote_addr"] == "127.0.0.1"


def test_response_code_headers_and_text(server):
    status, headers, body = request(server, "GET", "/plain?code=201")
    assert status == 201 and headers["content-type"] == "text/csv" and body == b"a,b\n1,2\n"
    status, headers, body = request(server, "GET", "/plain?code=204")
    assert status == 204 and body == b"" and "content-length" not in headers


@pytest.mark.parametrize("how, logged", [
    ("error", "deliberate-http-error"),
    ("code", "response.code must be"),
    ("header", "response.headers"),
    ("json", "cannot be encoded as JSON"),
])
def test_a_failing_script_is_a_500_and_logged(server, how, logged):
    status, _, body = request(server, "GET", f"/broken?how={how}")
    assert status == 500 and body == b"internal error\n"
    server.wait_for_log(logged)
    if how == "error":
        [line] = [l for l in server.log_lines_with("deliberate-http-error") if "script error" in l]
        assert "route=/broken" in line
        assert "stack traceback" in server.log()


def test_keep_alive_carries_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        local_ports = set()
        for i in range(20):
            conn.request("POST", "/mirror/k", body=f"n{i}".encode())
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["body"] == f"n{i}"
            assert response.getheader("Connection", "").lower() != "close"
            # http.client opens a new socket when the last one was closed: one port means one connection.
            local_ports.add(conn.sock.getsockname()[1])
        assert len(local_ports) == 1
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(server):
    with socket.create_connection((HOST, server.port), timeout=10) as s:
        s.sendall(b"".join(f"GET /mirror/p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5)))
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 200") < 5 and time.monotonic() < deadline:
            data += s.recv(65536)
    bodies = [json.loads(part[part.index(b"\r\n\r\n") + 4:]) for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert [b["parameters"]["thing"] for b in bodies] == [f"p{i}" for i in range(5)]


def test_a_chunked_request_body(server):
    with socket.create_connection((HOST, server.port), timeout=10) as s:
        s.sendall(b"POST /mirror/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
    assert json.loads(data[data.index(b"\r\n\r\n") + 4:])["body"] == "abcdefg"


def test_a_body_over_the_limit_is_413(server):
    status, _, _ = request(server, "POST", "/mirror/big", body=b"x" * 1001)
    assert status == 413
    status, _, body = request(server, "POST", "/mirror/big", body=b"x" * 1000)
    assert status == 200 and len(json.loads(body)["body"]) == 1000


def test_a_websocket_and_an_http_route_share_a_path(server):
    async def main():
        async with connect(server.url("/shared")) as ws:
            await ws.send("hi")
            return await recv(ws)

    assert run(main()) == "ws:hi"
    status, _, body = request(server, "DELETE", "/shared")
    assert status == 200 and body == b"http:DELETE"


def test_a_waiting_script_answers_later_and_the_loop_goes_on(server):
    started = time.monotonic()
    status, _, body = request(server, "GET", "/slow?ms=300")
    assert status == 200 and body == b"slept" and time.monotonic() - started >= 0.28


def test_unknown_paths_and_websocket_routes_answer_as_before(server):
    assert request(server, "GET", "/nothing-here")[0] == 404
    assert request(server, "GET", "/inbox")[0] == 426
    assert request(server, "GET", "/api/v1/solution/health")[0] == 200


def test_a_run_past_wait_timeout_is_504(wsgate):
    server = wsgate({"slow.http.lua": SLOW}, {"scripts": {"waitTimeoutMs": 200}}, workers=1)
    status, _, _ = request(server, "GET", "/slow?ms=3000")
    assert status == 504
    server.wait_for_log("script run abandoned")


def test_curl_posts_a_large_body_without_waiting_for_expect_continue(server):
    # curl sends "Expect: 100-continue" with bodies over 1 KiB and waits a second for the answer.
    import subprocess
    started = time.monotonic()
    proc = subprocess.run(["curl", "-sS", "-X", "POST", "-H", "Expect: 100-continue", "--data-binary", "z" * 999,
                           "-w", "\\n%{http_code}", f"http://{HOST}:{server.port}/mirror/curl"],
                          capture_output=True, text=True, timeout=10)
    elapsed = time.monotonic() - started
    body, _, code = proc.stdout.rpartition("\n")
    assert code == "200" and len(json.loads(body)["body"]) == 999
    assert elapsed < 0.9, elapsed
