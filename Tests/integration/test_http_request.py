"""Http.request: a script's run waits for an HTTP response while the loop serves everything else.
The servers are Python's http.server (plain and TLS with the test PKI) and raw sockets that answer
badly on purpose."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wsgate_support import HOST, connect, recv, recv_json, run, tls_server_context

# Each data message is a JSON table of Http.request arguments; the reply is the result as JSON.
CALLER = """
local w = websocketInfo
if w.type ~= "data" then return end
if w.message == "ping" then w.send("pong") return end
local args = from_json(w.message)
local result = Http.request(args)
w.send(to_json(result))
"""

ECHO = """
if websocketInfo.type == "data" then websocketInfo.send(websocketInfo.message) end
"""

# An HTTP endpoint script that waits on Http.request: GET /fetch?url=...
FETCH = """
local r = Http.request{url = request.parameters.url}
response.code = r.status
response.message = r.body or r.error
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self):
        path = self.path
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        if path == "/hello":
            self._send(200, b"hello", [("Content-Type", "text/plain"), ("X-Multi", "a"), ("X-Multi", "b")])
        elif path == "/echo":
            reply = {"method": self.command, "body": body.decode(), "path": self.path,
                     "headers": {k.lower(): v for k, v in self.headers.items()}}
            self._send(200, json.dumps(reply).encode(), [("Content-Type", "application/json")])
        elif path.startswith("/status/"):
            status = int(path.split("/")[2])
            self._send(status, f"status {status}".encode(), [("Location", "/hello")] if status == 302 else [])
        elif path.startswith("/slow/"):
            time.sleep(int(path.split("/")[2]) / 1000)
            self._send(200, b"slow")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/until-close":
            self.wfile.write(b"HTTP/1.0 200 OK\r\n\r\nto the end")
            self.close_connection = True
        elif path.startswith("/big/"):
            self._send(200, b"x" * int(path.split("/")[2]))
        elif path == "/url":
            self._send(200, json.dumps({"url": "ws://example.invalid/"}).encode())
        else:
            self._send(404, b"no such path")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _route


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (a timeout test) is expected


class HTTPUpstream:
    def __init__(self, tls_context=None):
        self.server = QuietServer((HOST, 0), Handler)
        self.server.lock = threading.Lock()
        self.server.connections = 0
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls_context else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path, host=HOST):
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def connections(self):
        with self.server.lock:
            return self.server.connections

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class RawUpstream:
    """Accepts connections and answers every one with the same bytes, then closes."""

    def __init__(self, answer: bytes, hold: float = 0.0):
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.answer = answer
        self.hold = hold
        self.closed_by_peer = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if self.hold:
                    conn.settimeout(self.hold)
                    try:
                        if conn.recv(1) == b"":
                            self.closed_by_peer.set()
                    except OSError:
                        pass
                    continue
                conn.sendall(self.answer)

    def url(self, path="/"):
        return f"http://{HOST}:{self.port}{path}"

    def stop(self):
        self.listener.close()


@pytest.fixture(scope="module")
def plain():
    upstream = HTTPUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module({"call.lua": CALLER, "echo.lua": ECHO, "fetch.http.lua": FETCH},
                         {"rateLimit": {"messagesPerSecond": 0}, "limits": {"httpResponseBytes": 100000}}, workers=1)


def call(server, args, timeout=15):
    async def main():
        async with connect(server.url("/call")) as ws:
            await ws.send(json.dumps(args))
            return await recv_json(ws, timeout=timeout)
    return run(main())


def test_a_get_returns_status_headers_and_body(server, plain):
    result = call(server, {"url": plain.url("/hello")})
    assert result["status"] == 200
    assert result["body"] == "hello"
    assert result["headers"]["content-type"] == "text/plain"
    assert result["headers"]["x-multi"] == "a, b"
    assert result["headers"]["content-length"] == "5"


def test_method_headers_and_body_reach_the_server(server, plain):
    result = call(server, {"url": plain.url("/echo"), "method": "post", "body": "payload",
                           "headers": {"X-Token": "t1", "Content-Type": "text/plain"}})
    seen = json.loads(result["body"])
    assert seen["method"] == "POST" and seen["body"] == "payload"
    assert seen["headers"]["x-token"] == "t1" and seen["headers"]["content-length"] == "7"
    assert seen["headers"]["host"] == f"{HOST}:{plain.port}"
    assert seen["headers"]["user-agent"] == "wsgate"


def test_every_status_is_a_response_and_redirects_are_not_followed(server, plain):
    for status in (404, 500, 302):
        result = call(server, {"url": plain.url(f"/status/{status}")})
        assert result["status"] == status and result["body"] == f"status {status}"
    assert call(server, {"url": plain.url("/status/302")})["headers"]["location"] == "/hello"


def test_chunked_and_until_close_bodies(server, plain):
    assert call(server, {"url": plain.url("/chunked")})["body"] == "one,two,three"
    result = call(server, {"url": plain.url("/until-close")})
    assert result["status"] == 200 and result["body"] == "to the end"


def test_a_head_request_has_no_body(server, plain):
    result = call(server, {"url": plain.url("/hello"), "method": "HEAD"})
    assert result["status"] == 200 and result["body"] == "" and result["headers"]["content-length"] == "5"


def test_keep_alive_connections_are_reused(server):
    upstream = HTTPUpstream()
    try:
        for _ in range(5):
            assert call(server, {"url": upstream.url("/hello")})["body"] == "hello"
        assert upstream.connections == 1
    finally:
        upstream.stop()


def test_a_slow_response_does_not_hold_the_loop(server, plain):
    async def main():
        async with connect(server.url("/call")) as slow, connect(server.url("/echo")) as fast:
            started = time.monotonic()
            await slow.send(json.dumps({"url": plain.url("/slow/500")}))
            latencies = []
            for i in range(20):
                t = time.monotonic()
                await fast.send(f"m{i}")
                assert await recv(fast) == f"m{i}"
                latencies.append(time.monotonic() - t)
            result = await recv_json(slow, timeout=5)
            return result, latencies, time.monotonic() - started

    result, latencies, elapsed = run(main())
    assert result["body"] == "slow" and elapsed >= 0.45
    assert max(latencies) < 0.3, latencies


def test_an_http_endpoint_script_waits_on_a_slow_response_without_holding_the_loop(server, plain):
    fetched = {}

    def fetch():
        started = time.monotonic()
        conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
        try:
            conn.request("GET", "/fetch?url=" + urllib.parse.quote(plain.url("/slow/500"), safe=""))
            response = conn.getresponse()
            fetched.update(status=response.status, body=response.read(), took=time.monotonic() - started)
        finally:
            conn.close()

    async def main():
        async with connect(server.url("/echo")) as fast:
            waiting = threading.Thread(target=fetch)
            waiting.start()
            latencies = []
            while waiting.is_alive() and len(latencies) < 200:
                t = time.monotonic()
                await fast.send("m")
                assert await recv(fast) == "m"
                latencies.append(time.monotonic() - t)
                await asyncio.sleep(0.01)
            waiting.join()
            return latencies

    latencies = run(main())
    assert fetched["status"] == 200 and fetched["body"] == b"slow" and fetched["took"] >= 0.45
    # The loop (one worker) served the socket all along while the run waited.
    assert len(latencies) >= 10 and max(latencies) < 0.3, latencies


def test_a_ca_file_that_cannot_be_loaded_is_bad_request(server, plain, tmp_path):
    missing = call(server, {"url": "https://127.0.0.1:1/", "ca_file": str(tmp_path / "no-such.pem")})
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    garbage = call(server, {"url": "https://127.0.0.1:1/", "ca_file": str(not_pem)})
    assert missing["type"] == "BadRequest" and missing["status"] == 400
    assert garbage["type"] == "BadRequest" and garbage["status"] == 400


def test_a_timeout_is_gateway_timeout(server, plain):
    started = time.monotonic()
    result = call(server, {"url": plain.url("/slow/2000"), "timeout_ms": 300})
    assert result["type"] == "GatewayTimeout" and result["status"] == 504
    assert time.monotonic() - started < 1.5


def test_unreachable_and_broken_servers_are_bad_gateway(server):
    closed = socket.socket()
    closed.bind((HOST, 0))
    port = closed.getsockname()[1]
    closed.close()
    refused = call(server, {"url": f"http://{HOST}:{port}/"})
    assert refused["type"] == "BadGateway" and refused["status"] == 502 and "refused" in refused["error"].lower()
    unknown = call(server, {"url": "http://no-such-host.invalid/"})
    assert unknown["type"] == "BadGateway" and "resolve" in unknown["error"]
    garbage = RawUpstream(b"HTTP/1.1 abc\r\n\r\n")
    try:
        malformed = call(server, {"url": garbage.url()})
        assert malformed["type"] == "BadGateway" and "malformed" in malformed["error"]
    finally:
        garbage.stop()


def test_a_body_over_the_limit_is_bad_gateway(server, plain):
    assert len(call(server, {"url": plain.url("/big/100000")})["body"]) == 100000
    result = call(server, {"url": plain.url("/big/100001")})
    assert result["type"] == "BadGateway" and "limits.httpResponseBytes" in result["error"]


@pytest.mark.parametrize("args, fragment", [
    ({"url": "ftp://example.com/"}, "http:// or https://"),
    ({"url": "http://exa mple.com/"}, "bad url"),
    ({}, "url is required"),
    ({"url": "http://127.0.0.1/", "method": "GE T"}, "method"),
    ({"url": "http://127.0.0.1/", "headers": {"X-Bad": "a\r\nInjected: 1"}}, "control character"),
    ({"url": "http://127.0.0.1/", "headers": {"Content-Length": "5"}}, "set by the gateway"),
    ({"url": "http://127.0.0.1/", "timeout_ms": 0}, "timeout_ms"),
    ({"url": "http://127.0.0.1/", "body": 5}, "body must be a string"),
])
def test_bad_arguments_are_bad_request_at_once(server, args, fragment):
    result = call(server, args)
    assert result["type"] == "BadRequest" and result["status"] == 400
    assert fragment in result["error"]


def test_https_with_the_test_ca_insecure_and_untrusted(server, throwaway_ca):
    upstream = HTTPUpstream(tls_server_context(*throwaway_ca.good))
    try:
        trusted = call(server, {"url": upstream.url("/hello", host="localhost"), "ca_file": str(throwaway_ca.ca_cert)})
        assert trusted["status"] == 200 and trusted["body"] == "hello"
        by_ip = call(server, {"url": upstream.url("/hello"), "ca_file": str(throwaway_ca.ca_cert)})
        assert by_ip["status"] == 200
        untrusted = call(server, {"url": upstream.url("/hello", host="localhost")})
        assert untrusted["type"] == "BadGateway" and "certificate" in untrusted["error"].lower()
        insecure = call(server, {"url": upstream.url("/hello", host="localhost"), "insecure": True})
        assert insecure["status"] == 200
    finally:
        upstream.stop()


def test_a_run_past_wait_timeout_cancels_its_request(wsgate):
    server = wsgate({"call.lua": CALLER}, {"rateLimit": {"messagesPerSecond": 0}, "scripts": {"waitTimeoutMs": 300}},
                    workers=1)
    silent = RawUpstream(b"", hold=5.0)
    try:
        async def main():
            async with connect(server.url("/call")) as ws:
                await ws.send(json.dumps({"url": silent.url()}))
                await ws.send("ping")
                return await recv(ws, timeout=5)

        assert run(main()) == "pong"
        assert silent.closed_by_peer.wait(5), "the abandoned request's connection was not closed"
        server.wait_for_log("script run abandoned")
    finally:
        silent.stop()
